"""Medical domain text for the built-in corpus: textbook-style paragraphs about common conditions.

The table holds general medical knowledge only: what a condition is, its usual symptoms, the kind of specialist
who treats it, and classes of treatment. No doses, no individual advice. Text avoids the names of chemical
elements and other held-out entities so that medical instruction data never mentions them.
"""

from typing import NamedTuple


class Condition(NamedTuple):
    name: str  # as said mid-sentence ("asthma", "Parkinson's disease")
    definition: str  # completes "<name> is ..."
    symptoms: tuple[str, ...]
    specialist: str  # key of SPECIALISTS: the doctor who most often treats it (often a family doctor)
    treatments: tuple[str, ...]  # classes of treatment, no doses
    notes: tuple[str, ...] = ()  # further true sentences about the condition
    emergency: bool = False  # needs emergency care: answers say so
    silent: bool = False  # often causes no symptoms at first: text says so beside the symptom list


# Each specialist and what they specialise in.
SPECIALISTS = {
    "pulmonologist": "a doctor who specializes in the lungs",
    "endocrinologist": "a doctor who specializes in hormones and glands",
    "cardiologist": "a doctor who specializes in the heart and blood vessels",
    "neurologist": "a doctor who specializes in the brain and nerves",
    "gastroenterologist": "a doctor who specializes in the digestive system",
    "rheumatologist": "a doctor who specializes in joints and autoimmune diseases",
    "dermatologist": "a doctor who specializes in the skin",
    "urologist": "a doctor who specializes in the urinary tract",
    "nephrologist": "a doctor who specializes in the kidneys",
    "ophthalmologist": "a doctor who specializes in the eyes",
    "psychiatrist": "a doctor who specializes in mental health",
    "hematologist": "a doctor who specializes in the blood",
    "infectious disease specialist": "a doctor who specializes in infections",
    "general practitioner": "a family doctor who treats a wide range of common illnesses",
    "sleep specialist": "a doctor who specializes in sleep disorders",
}

DISCLAIMER = "This is general information, not medical advice; please see a doctor about your own situation."
EMERGENCY = "If you think someone is having {n}, call emergency services right away."
SILENT = "Many people with {n} have no symptoms at first."

CONDITIONS = (
    Condition("asthma", "a long-term condition in which the airways of the lungs become inflamed and narrowed",
              ("wheezing", "shortness of breath", "chest tightness", "coughing"), "pulmonologist",
              ("inhaled corticosteroids", "bronchodilators", "avoidance of known triggers"),
              ("Asthma attacks can be triggered by allergens, cold air, exercise or respiratory infections.",)),
    Condition("type 2 diabetes",
              "a long-term condition in which the body does not use insulin properly, so blood sugar stays too high",
              ("increased thirst", "frequent urination", "tiredness", "blurred vision", "slow-healing wounds"),
              "endocrinologist",
              ("a healthy diet", "regular exercise", "oral medicines that lower blood sugar", "insulin"),
              ("Being overweight and physically inactive raise the risk of type 2 diabetes.",)),
    Condition("type 1 diabetes", "an autoimmune condition in which the body destroys the cells that make insulin",
              ("increased thirst", "frequent urination", "weight loss", "tiredness"), "endocrinologist",
              ("insulin therapy", "regular blood sugar monitoring", "careful meal planning"),
              ("Type 1 diabetes often starts in childhood or early adulthood.",)),
    Condition("high blood pressure", "a condition in which the force of blood against the artery walls is too high",
              ("severe headaches", "nosebleeds", "shortness of breath"), "cardiologist",
              ("a low-salt diet", "regular exercise", "ACE inhibitors", "diuretics",
               "other medicines that relax the blood vessels"),
              ("Untreated high blood pressure raises the risk of heart attack and stroke.",), silent=True),
    Condition("migraine", "a neurological condition that causes repeated attacks of strong headache",
              ("a throbbing headache on one side of the head", "nausea", "sensitivity to light", "sensitivity to sound",
               "visual disturbances called aura"), "neurologist",
              ("pain relievers", "triptans", "preventive medicines", "avoidance of known triggers"),
              ("A migraine attack can last from a few hours to several days.",)),
    Condition("pneumonia", "an infection that inflames the air sacs in one or both lungs",
              ("cough with phlegm", "fever", "chills", "shortness of breath", "chest pain when breathing"),
              "pulmonologist", ("antibiotics for bacterial pneumonia", "rest", "plenty of fluids"),
              ("Pneumonia can be caused by bacteria, viruses or fungi.",)),
    Condition("influenza", "a contagious viral infection of the nose, throat and lungs",
              ("fever", "muscle aches", "cough", "sore throat", "tiredness", "headache"), "general practitioner",
              ("rest", "plenty of fluids", "antiviral medicines in some cases"),
              ("A yearly vaccine lowers the risk of catching influenza.",)),
    Condition("the common cold", "a mild viral infection of the nose and throat",
              ("runny nose", "sneezing", "sore throat", "mild cough"), "general practitioner",
              ("rest", "plenty of fluids", "medicines that relieve symptoms"),
              ("Antibiotics do not help against the common cold because it is caused by viruses.",)),
    Condition("gastroesophageal reflux disease",
              "a condition in which stomach acid often flows back into the esophagus",
              ("heartburn", "regurgitation of food or sour liquid", "chest pain", "difficulty swallowing"),
              "gastroenterologist", ("antacids", "proton pump inhibitors", "H2 blockers", "changes to eating habits"),
              ("Large meals and lying down soon after eating can make reflux worse.",)),
    Condition("rheumatoid arthritis",
              "an autoimmune disease in which the immune system attacks the lining of the joints",
              ("joint pain", "joint swelling", "morning stiffness", "tiredness"), "rheumatologist",
              ("disease-modifying antirheumatic drugs", "anti-inflammatory medicines", "physical therapy"),
              ("Rheumatoid arthritis usually affects the same joints on both sides of the body.",)),
    Condition("osteoarthritis", "a condition in which the cartilage that cushions the joints wears down over time",
              ("joint pain", "stiffness", "reduced range of movement", "a grating feeling in the joint"),
              "rheumatologist", ("regular exercise", "weight control", "pain relievers", "physical therapy",
                                 "joint replacement surgery in severe cases"),
              ("Osteoarthritis most often affects the knees, hips, hands and spine.",)),
    Condition("osteoporosis", "a condition in which the bones become weak and break more easily",
              ("a bone that breaks after a minor fall", "back pain", "loss of height over time", "a stooped posture"),
              "endocrinologist", ("weight-bearing exercise", "dietary supplements for bone health",
                                  "medicines that slow bone loss"),
              ("Osteoporosis is more common in older adults, especially in women after menopause.",), silent=True),
    Condition("anemia", "a condition in which the blood does not have enough healthy red blood cells",
              ("tiredness", "weakness", "pale skin", "shortness of breath", "dizziness"), "hematologist",
              ("treating the underlying cause", "dietary changes", "supplements"),
              ("Anemia has many causes, including blood loss and poor diet.",)),
    Condition("hypothyroidism", "a condition in which the thyroid gland does not make enough thyroid hormone",
              ("tiredness", "weight gain", "feeling cold", "dry skin", "constipation"), "endocrinologist",
              ("thyroid hormone replacement",),
              ("Hypothyroidism usually develops slowly over months or years.",)),
    Condition("hyperthyroidism", "a condition in which the thyroid gland makes too much thyroid hormone",
              ("weight loss", "rapid heartbeat", "anxiety", "trembling hands", "sweating"), "endocrinologist",
              ("antithyroid medicines", "beta blockers", "radioiodine therapy", "surgery"),
              ("Graves' disease is a common cause of hyperthyroidism.",)),
    Condition("depression", "a mental health condition that causes a persistent low mood and loss of interest",
              ("persistent sadness", "loss of interest in activities", "sleep problems", "tiredness",
               "difficulty concentrating"), "psychiatrist",
              ("psychotherapy", "antidepressant medicines", "regular physical activity"),
              ("Depression is common and it can be treated.",)),
    Condition("generalized anxiety disorder", "a mental health condition marked by constant and excessive worry",
              ("excessive worry", "restlessness", "muscle tension", "sleep problems", "difficulty concentrating"),
              "psychiatrist", ("cognitive behavioral therapy", "antidepressant medicines", "relaxation techniques"),
              ("Generalized anxiety disorder often starts in childhood or early adulthood.",)),
    Condition("eczema", "a condition that makes the skin dry, itchy and inflamed",
              ("dry skin", "itching", "red patches", "cracked or scaly skin"), "dermatologist",
              ("moisturizers", "topical corticosteroids", "avoidance of irritants"),
              ("Eczema often begins in childhood and can come and go.",)),
    Condition("psoriasis", "an autoimmune condition that causes red, scaly patches on the skin",
              ("red patches covered with silvery scales", "itching", "dry and cracked skin", "thick nails"),
              "dermatologist", ("topical treatments", "light therapy", "biologic medicines"),
              ("Psoriasis is not contagious.",)),
    Condition("acne", "a skin condition in which hair follicles become plugged with oil and dead skin cells",
              ("pimples", "blackheads", "whiteheads", "oily skin"), "dermatologist",
              ("topical retinoids", "benzoyl peroxide", "antibiotics in some cases"),
              ("Acne is most common in teenagers.",)),
    Condition("a urinary tract infection", "an infection in any part of the urinary system, most often the bladder",
              ("a burning feeling when urinating", "a frequent urge to urinate", "cloudy urine",
               "pain in the lower belly"), "general practitioner", ("antibiotics", "plenty of fluids"),
              ("Urinary tract infections are more common in women than in men.",)),
    Condition("a kidney stone", "a hard deposit of minerals and salts that forms inside a kidney",
              ("severe pain in the side or back", "blood in the urine", "nausea", "pain when urinating"),
              "urologist", ("pain relief", "plenty of fluids", "procedures that break up or remove stones"),
              ("Drinking enough water helps to prevent kidney stones.",)),
    Condition("chronic kidney disease",
              "a long-term condition in which the kidneys slowly lose their ability to filter the blood",
              ("tiredness", "swollen ankles", "changes in urination", "itchy skin"), "nephrologist",
              ("control of blood pressure", "control of blood sugar", "medicines that protect the kidneys", "dialysis",
               "kidney transplant in advanced cases"),
              ("Diabetes and high blood pressure are the most common causes of chronic kidney disease.",), silent=True),
    Condition("coronary artery disease", "a condition in which the arteries that supply the heart become narrow",
              ("chest pain called angina", "shortness of breath", "tiredness during exercise"), "cardiologist",
              ("healthy lifestyle changes", "statins", "antiplatelet medicines",
               "procedures that open or bypass narrowed arteries"),
              ("Smoking is a major risk factor for coronary artery disease.",)),
    Condition("heart failure", "a condition in which the heart cannot pump blood as well as it should",
              ("shortness of breath", "tiredness", "swollen legs", "rapid weight gain from fluid"),
              "cardiologist", ("diuretics", "ACE inhibitors", "beta blockers", "a low-salt diet"),
              ("Heart failure does not mean that the heart has stopped working.",)),
    Condition("atrial fibrillation",
              "an irregular and often rapid heart rhythm that starts in the upper chambers of the heart",
              ("palpitations", "irregular heartbeat", "tiredness", "shortness of breath", "dizziness"), "cardiologist",
              ("anticoagulant medicines", "medicines that control the heart rate",
               "procedures that restore a normal rhythm"),
              ("Atrial fibrillation raises the risk of stroke.",)),
    Condition("a heart attack", "a medical emergency in which blood flow to part of the heart muscle is blocked",
              ("chest pain or pressure", "pain spreading to the arm or jaw", "shortness of breath", "cold sweat",
               "nausea"), "cardiologist",
              ("emergency treatment to restore blood flow", "medicines that prevent further clots",
               "cardiac rehabilitation"),
              ("Fast treatment of a heart attack saves heart muscle.",), True),
    Condition("a stroke", "a medical emergency in which the blood supply to part of the brain is cut off",
              ("sudden numbness or weakness on one side of the body", "a drooping face", "trouble speaking",
               "sudden vision problems"), "neurologist",
              ("emergency treatment", "clot-dissolving medicines for some strokes", "rehabilitation"),
              ("With a stroke, every minute counts.",), True),
    Condition("epilepsy", "a neurological condition that causes repeated seizures",
              ("seizures", "brief staring spells", "temporary confusion", "uncontrollable jerking movements"),
              "neurologist", ("anti-seizure medicines", "surgery in some cases"),
              ("Many people with epilepsy live full lives with treatment.",)),
    Condition("Parkinson's disease", "a progressive disorder of the nervous system that affects movement",
              ("tremor", "slowness of movement", "stiff muscles", "problems with balance"), "neurologist",
              ("medicines that replace or mimic dopamine", "physical therapy", "deep brain stimulation in some cases"),
              ("Parkinson's disease develops slowly over years.",)),
    Condition("Alzheimer's disease", "a progressive brain disease that slowly destroys memory and thinking skills",
              ("memory loss", "confusion", "difficulty finding words", "changes in behavior"), "neurologist",
              ("medicines that may ease symptoms for a time", "care planning", "mental stimulation"),
              ("Alzheimer's disease is the most common cause of dementia.",)),
    Condition("chronic obstructive pulmonary disease",
              "a long-term lung disease that blocks airflow and makes breathing difficult",
              ("chronic cough", "shortness of breath", "wheezing", "coughing up mucus"), "pulmonologist",
              ("support to stop smoking", "bronchodilators", "inhaled corticosteroids", "pulmonary rehabilitation"),
              ("Smoking is the main cause of chronic obstructive pulmonary disease.",)),
    Condition("irritable bowel syndrome", "a common disorder of the gut that affects how the bowel works",
              ("abdominal pain", "bloating", "diarrhea", "constipation"), "gastroenterologist",
              ("changes to diet", "fiber", "medicines that relieve cramps", "stress management"),
              ("Irritable bowel syndrome does not damage the bowel.",)),
    Condition("Crohn's disease", "an inflammatory bowel disease that can affect any part of the digestive tract",
              ("abdominal pain", "diarrhea", "weight loss", "tiredness"), "gastroenterologist",
              ("anti-inflammatory medicines", "immune system suppressors", "biologic medicines",
               "surgery in some cases"),
              ("Crohn's disease tends to flare up and then settle down.",)),
    Condition("celiac disease", "an immune reaction to eating gluten, a protein in wheat, barley and rye",
              ("diarrhea", "bloating", "weight loss", "tiredness"), "gastroenterologist",
              ("a strict lifelong gluten-free diet",),
              ("In celiac disease, gluten damages the lining of the small intestine.",)),
    Condition("gout", "a form of arthritis caused by crystals of uric acid in a joint",
              ("sudden severe pain in a joint such as the big toe", "swelling", "redness", "warmth in the joint"),
              "rheumatologist", ("anti-inflammatory medicines", "medicines that lower uric acid", "changes to diet"),
              ("Gout attacks often start at night.",)),
    Condition("glaucoma",
              "a group of eye conditions that damage the optic nerve, often because of high pressure in the eye",
              ("gradual loss of side vision", "blurred vision", "tunnel vision in advanced stages"),
              "ophthalmologist", ("eye drops that lower eye pressure", "laser treatment", "surgery"),
              ("Regular eye exams can find glaucoma before vision is lost.",), silent=True),
    Condition("a cataract", "a clouding of the normally clear lens of the eye",
              ("cloudy or blurred vision", "glare from lights", "faded colors", "poor night vision"), "ophthalmologist",
              ("stronger glasses at first", "surgery to replace the lens"),
              ("Cataracts are very common in older adults.",)),
    Condition("a middle ear infection", "an infection of the air-filled space behind the eardrum",
              ("ear pain", "fever", "trouble hearing", "fluid draining from the ear"), "general practitioner",
              ("pain relief", "antibiotics in some cases"),
              ("Middle ear infections are most common in young children.",)),
    Condition("sinusitis", "an inflammation of the sinuses, the air-filled spaces behind the face",
              ("facial pain or pressure", "blocked nose", "thick nasal discharge", "reduced sense of smell"),
              "general practitioner",
              ("saline nasal rinses", "nasal corticosteroid sprays", "antibiotics if bacteria are the cause"),
              ("Most cases of sinusitis follow a common cold.",)),
    Condition("Lyme disease", "an infection caused by bacteria that spread through the bite of infected ticks",
              ("a spreading red rash", "fever", "tiredness", "joint pain"), "general practitioner",
              ("antibiotics",), ("Checking the skin for ticks after time outdoors helps to prevent Lyme disease.",)),
    Condition("malaria", "a serious infection caused by parasites that spread through the bites of infected mosquitoes",
              ("fever", "chills", "sweating", "headache", "muscle aches"), "infectious disease specialist",
              ("antimalarial medicines",), ("Bed nets and insect repellent help to prevent malaria.",)),
    Condition("tuberculosis", "a bacterial infection that mainly affects the lungs",
              ("a cough that lasts for weeks", "coughing up blood", "weight loss", "night sweats", "fever"),
              "infectious disease specialist", ("a long course of several antibiotics taken together",),
              ("Tuberculosis spreads through the air when an infected person coughs.",)),
    Condition("insomnia", "a sleep disorder that makes it hard to fall asleep or to stay asleep",
              ("difficulty falling asleep", "waking up often during the night", "waking up too early",
               "daytime tiredness"), "sleep specialist",
              ("cognitive behavioral therapy for insomnia", "good sleep habits", "short-term sleep medicines"),
              ("Stress and irregular sleep schedules can cause insomnia.",)),
)


def join_list(items) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def with_article(specialist: str) -> str:
    # "a urologist": its "u" sounds like "you".
    return ("an " if specialist[0] in "aeio" else "a ") + specialist


DEFINITION_TEMPLATES = ("{n} is {d}.", "In medicine, {n} is {d}.", "Doctors describe {n} as {d}.",
                        "Put simply, {n} is {d}.", "{n} is best described as {d}.")
SYMPTOM_TEMPLATES = ("Common symptoms of {n} include {x}.", "People with {n} often have {x}.",
                     "Typical signs of {n} are {x}.", "The main symptoms of {n} are {x}.",
                     "Someone with {n} may notice {x}.")
SPECIALIST_TEMPLATES = ("{N} is often treated by {a}, {w}.", "People with {n} often see {a}, {w}.",
                        "A doctor who often treats {n} is {a}, {w}.", "Care for {n} is often led by {a}, {w}.",
                        "{A}, {w}, often manages {n}.")
TREATMENT_TEMPLATES = ("Treatment of {n} usually involves {x}.", "{N} is commonly treated with {x}.",
                       "Doctors often manage {n} with {x}.", "Common treatments for {n} include {x}.",
                       "Options for treating {n} include {x}.")
CLOSING_TEMPLATES = ("Anyone who thinks they may have {n} should talk to a doctor.",
                     "A doctor can confirm whether someone has {n}.",
                     "People with signs of {n} should seek medical advice.",
                     "Getting a proper diagnosis of {n} is the first step to good care.",
                     "A doctor can explain the best way to manage {n} for each person.")


def fill(template: str, condition: Condition, items=()) -> str:
    """Fill a medical template for `condition`; {x} is the joined `items`."""
    specialist = with_article(condition.specialist)
    text = template.format(n=condition.name, N=cap(condition.name), d=condition.definition,
                           x=join_list(items) if items else "", a=specialist, A=cap(specialist),
                           w=SPECIALISTS[condition.specialist])
    return cap(text)


def condition_sentences(condition: Condition, rng) -> list[str]:
    """One paragraph's sentences: definition, then symptoms, specialist and treatment in varied order, a note,
    and a closing line. The symptom list is a random subset in random order."""
    symptoms = rng.sample(condition.symptoms, rng.randint(min(3, len(condition.symptoms)), len(condition.symptoms)))
    treatments = condition.treatments  # table order: first-line treatments first, qualified ones ("in some cases") last
    symptom_text = fill(rng.choice(SYMPTOM_TEMPLATES), condition, symptoms)
    if condition.silent:
        symptom_text += " " + cap(SILENT.format(n=condition.name))
    body = [fill(rng.choice(SPECIALIST_TEMPLATES), condition),
            fill(rng.choice(TREATMENT_TEMPLATES), condition, treatments)]
    rng.shuffle(body)  # symptoms come first because they follow the definition best; the rest in either order
    sentences = [fill(rng.choice(DEFINITION_TEMPLATES), condition), symptom_text] + body
    if condition.notes and rng.random() < 0.7:
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(condition.notes))
    if condition.emergency:
        sentences.append(cap(EMERGENCY.format(n=condition.name)))
    sentences.append(fill(rng.choice(CLOSING_TEMPLATES), condition))
    return sentences


def medical_document(condition: Condition, rng) -> str:
    return " ".join(condition_sentences(condition, rng))


def medical_summary(condition: Condition) -> str:
    return f"The text describes {condition.name}, which is often treated by {with_article(condition.specialist)}."


QUESTION_KINDS = (
    ("symptoms", ("What are the symptoms of {n}?", "How can I tell if I have {n}?", "What are the signs of {n}?")),
    ("specialist", ("Which doctor treats {n}?", "What kind of specialist should I see for {n}?", "Who treats {n}?")),
    ("treatment", ("How is {n} treated?", "What are the treatments for {n}?", "How do doctors manage {n}?")),
    ("definition", ("What is {n}?", "Can you explain what {n} is?", "Tell me about {n}.")),
)


# The answers' wordings: each names the condition as the question does, in lowercase inside the sentence. An
# answer that opens with the name capitalised ("Osteoarthritis is often treated by ...") asks the model for
# another piece than the question's; for conditions the instruction data never names, the instruction-tuned model
# wrote a seen condition's name there (specialist and definition answers about held-out conditions: 0 of 9 right,
# against 10 of 11 for the symptom and treatment answers, which name it inside the sentence).
ANSWER_TEMPLATES = {"symptoms": SYMPTOM_TEMPLATES[0], "specialist": SPECIALIST_TEMPLATES[1],
                    "treatment": TREATMENT_TEMPLATES[0], "definition": DEFINITION_TEMPLATES[1]}


def medical_answer(condition: Condition, kind: str) -> str:
    """The correct, plain answer to a question of `kind` (no disclaimer: callers add the tone)."""
    items = {"symptoms": condition.symptoms, "treatment": condition.treatments}.get(kind, ())
    answer = fill(ANSWER_TEMPLATES[kind], condition, items)
    if kind == "symptoms" and condition.silent:
        answer += " " + cap(SILENT.format(n=condition.name))
    if condition.emergency:
        answer += " " + cap(EMERGENCY.format(n=condition.name))
    return answer


def medical_questions(condition: Condition) -> list[tuple[str, str, str]]:
    """Every (kind, question, answer) about `condition`: the medical evaluation set."""
    return [(kind, cap(q.format(n=condition.name)), medical_answer(condition, kind))
            for kind, phrasings in QUESTION_KINDS for q in phrasings]


def medical_qa(condition: Condition, rng) -> tuple[str, str]:
    """A random question about `condition` and its correct, plain answer."""
    kind, phrasings = rng.choice(QUESTION_KINDS)
    return cap(rng.choice(phrasings).format(n=condition.name)), medical_answer(condition, kind)
