"""Fact tables behind the built-in corpus: countries, chemical elements, animals, planets and numbers.

Every row is meant to be true and uncontroversial: where a fact is disputed or changing (a country with several
capitals, a language that only a minority speaks, a currency about to change) the row leaves that field out
(None) or the entity is not listed at all. Names are plain ASCII (Bogota, not Bogota with an accent) so that
generated text needs no escaping and tokenizers see one spelling. No entity name is a whole word inside another
entity's name (no "bear" beside "polar bear", no element mercury beside the planet), so a name search finds
exactly the entity it looks for.
"""

from typing import NamedTuple


class Country(NamedTuple):
    name: str
    continent: str
    capital: str
    # Main language most people speak; None where that is not clear-cut (several large languages, or most
    # residents are foreign workers, as in Qatar).
    language: str | None
    currency: str | None  # None where the currency is changing or unclear
    article: str = ""  # "the" for names that take one ("the United States")


class Element(NamedTuple):
    name: str  # lower case, as used mid-sentence
    symbol: str
    number: int  # atomic number
    category: str  # metal, nonmetal, metalloid or noble gas
    state: str  # at room temperature: solid, liquid or gas


class Animal(NamedTuple):
    name: str  # as used after "the", mid-sentence ("the polar bear")
    animal_class: str  # mammal, bird, reptile, amphibian, fish, insect, mollusc, crustacean
    habitat: str  # with its preposition: "in the savanna", "on farms"
    diet: str  # carnivore, herbivore or omnivore


class Planet(NamedTuple):
    name: str
    order: str  # position from the Sun, as an ordinal word
    planet_type: str  # rocky planet, gas giant or ice giant
    moons: str  # "no moons", "one moon", "two moons", or "many moons" for the giants (counts keep changing)


CONTINENTS = ("Africa", "Asia", "Europe", "North America", "South America", "Oceania")

COUNTRIES = (
    # Europe (Russia spans two continents and says so)
    Country("France", "Europe", "Paris", "French", "euro"),
    Country("Germany", "Europe", "Berlin", "German", "euro"),
    Country("Italy", "Europe", "Rome", "Italian", "euro"),
    Country("Spain", "Europe", "Madrid", "Spanish", "euro"),
    Country("Portugal", "Europe", "Lisbon", "Portuguese", "euro"),
    Country("Netherlands", "Europe", "Amsterdam", "Dutch", "euro", "the"),
    Country("Austria", "Europe", "Vienna", "German", "euro"),
    Country("Ireland", "Europe", "Dublin", "English", "euro"),
    Country("Greece", "Europe", "Athens", "Greek", "euro"),
    Country("Poland", "Europe", "Warsaw", "Polish", "Polish zloty"),
    Country("Sweden", "Europe", "Stockholm", "Swedish", "Swedish krona"),
    Country("Norway", "Europe", "Oslo", "Norwegian", "Norwegian krone"),
    Country("Denmark", "Europe", "Copenhagen", "Danish", "Danish krone"),
    Country("Finland", "Europe", "Helsinki", "Finnish", "euro"),
    Country("Iceland", "Europe", "Reykjavik", "Icelandic", "Icelandic krona"),
    Country("Hungary", "Europe", "Budapest", "Hungarian", "Hungarian forint"),
    Country("Czechia", "Europe", "Prague", "Czech", "Czech koruna"),
    Country("Slovakia", "Europe", "Bratislava", "Slovak", "euro"),
    Country("Romania", "Europe", "Bucharest", "Romanian", "Romanian leu"),
    Country("Bulgaria", "Europe", "Sofia", "Bulgarian", None),
    Country("Croatia", "Europe", "Zagreb", "Croatian", "euro"),
    Country("Serbia", "Europe", "Belgrade", "Serbian", "Serbian dinar"),
    Country("Ukraine", "Europe", "Kyiv", "Ukrainian", "Ukrainian hryvnia"),
    Country("Russia", "Europe and Asia", "Moscow", "Russian", "Russian ruble"),
    Country("United Kingdom", "Europe", "London", "English", "pound sterling", "the"),
    Country("Estonia", "Europe", "Tallinn", "Estonian", "euro"),
    Country("Latvia", "Europe", "Riga", "Latvian", "euro"),
    Country("Lithuania", "Europe", "Vilnius", "Lithuanian", "euro"),
    Country("Slovenia", "Europe", "Ljubljana", "Slovenian", "euro"),
    Country("Albania", "Europe", "Tirana", "Albanian", "Albanian lek"),
    # Asia
    Country("Japan", "Asia", "Tokyo", "Japanese", "Japanese yen"),
    Country("China", "Asia", "Beijing", "Chinese", "renminbi"),
    Country("South Korea", "Asia", "Seoul", "Korean", "South Korean won"),
    Country("India", "Asia", "New Delhi", None, "Indian rupee"),
    Country("Pakistan", "Asia", "Islamabad", None, "Pakistani rupee"),
    Country("Bangladesh", "Asia", "Dhaka", "Bengali", "Bangladeshi taka"),
    Country("Thailand", "Asia", "Bangkok", "Thai", "Thai baht"),
    Country("Vietnam", "Asia", "Hanoi", "Vietnamese", "Vietnamese dong"),
    Country("Malaysia", "Asia", "Kuala Lumpur", "Malay", "Malaysian ringgit"),
    Country("Philippines", "Asia", "Manila", "Filipino", "Philippine peso", "the"),
    Country("Mongolia", "Asia", "Ulaanbaatar", "Mongolian", "Mongolian tugrik"),
    Country("Nepal", "Asia", "Kathmandu", None, "Nepalese rupee"),
    Country("Iran", "Asia", "Tehran", "Persian", "Iranian rial"),
    Country("Iraq", "Asia", "Baghdad", "Arabic", "Iraqi dinar"),
    Country("Saudi Arabia", "Asia", "Riyadh", "Arabic", "Saudi riyal"),
    Country("Jordan", "Asia", "Amman", "Arabic", "Jordanian dinar"),
    Country("Syria", "Asia", "Damascus", "Arabic", "Syrian pound"),
    Country("Lebanon", "Asia", "Beirut", "Arabic", "Lebanese pound"),
    Country("Uzbekistan", "Asia", "Tashkent", "Uzbek", "Uzbek som"),
    Country("Tajikistan", "Asia", "Dushanbe", "Tajik", "Tajik somoni"),
    Country("Turkmenistan", "Asia", "Ashgabat", "Turkmen", "Turkmen manat"),
    Country("Cambodia", "Asia", "Phnom Penh", "Khmer", "Cambodian riel"),
    Country("Laos", "Asia", "Vientiane", "Lao", "Lao kip"),
    Country("Myanmar", "Asia", "Naypyidaw", "Burmese", "Myanmar kyat"),
    Country("Qatar", "Asia", "Doha", None, "Qatari riyal"),
    Country("Oman", "Asia", "Muscat", "Arabic", "Omani rial"),
    Country("United Arab Emirates", "Asia", "Abu Dhabi", None, "UAE dirham", "the"),
    Country("Bhutan", "Asia", "Thimphu", None, "Bhutanese ngultrum"),
    # Africa
    Country("Egypt", "Africa", "Cairo", "Arabic", "Egyptian pound"),
    Country("Kenya", "Africa", "Nairobi", "Swahili", "Kenyan shilling"),
    Country("Nigeria", "Africa", "Abuja", None, "Nigerian naira"),
    Country("Ethiopia", "Africa", "Addis Ababa", None, "Ethiopian birr"),
    Country("Morocco", "Africa", "Rabat", "Arabic", "Moroccan dirham"),
    Country("Algeria", "Africa", "Algiers", "Arabic", "Algerian dinar"),
    Country("Tunisia", "Africa", "Tunis", "Arabic", "Tunisian dinar"),
    Country("Ghana", "Africa", "Accra", None, "Ghanaian cedi"),
    Country("Senegal", "Africa", "Dakar", None, "West African CFA franc"),
    Country("Tanzania", "Africa", "Dodoma", "Swahili", "Tanzanian shilling"),
    Country("Uganda", "Africa", "Kampala", None, "Ugandan shilling"),
    Country("Madagascar", "Africa", "Antananarivo", "Malagasy", "Malagasy ariary"),
    Country("Angola", "Africa", "Luanda", "Portuguese", "Angolan kwanza"),
    Country("Mozambique", "Africa", "Maputo", None, "Mozambican metical"),
    Country("Zambia", "Africa", "Lusaka", None, "Zambian kwacha"),
    Country("Malawi", "Africa", "Lilongwe", None, "Malawian kwacha"),
    Country("Somalia", "Africa", "Mogadishu", "Somali", "Somali shilling"),
    Country("Rwanda", "Africa", "Kigali", "Kinyarwanda", "Rwandan franc"),
    Country("Libya", "Africa", "Tripoli", "Arabic", "Libyan dinar"),
    Country("Botswana", "Africa", "Gaborone", None, "Botswana pula"),
    Country("Namibia", "Africa", "Windhoek", None, "Namibian dollar"),
    # North America (Central America and the Caribbean included)
    Country("United States", "North America", "Washington", "English", "US dollar", "the"),
    Country("Canada", "North America", "Ottawa", "English", "Canadian dollar"),
    Country("Mexico", "North America", "Mexico City", "Spanish", "Mexican peso"),
    Country("Cuba", "North America", "Havana", "Spanish", "Cuban peso"),
    Country("Jamaica", "North America", "Kingston", None, "Jamaican dollar"),
    Country("Honduras", "North America", "Tegucigalpa", "Spanish", "Honduran lempira"),
    Country("Nicaragua", "North America", "Managua", "Spanish", "Nicaraguan cordoba"),
    Country("Costa Rica", "North America", "San Jose", "Spanish", "Costa Rican colon"),
    Country("Dominican Republic", "North America", "Santo Domingo", "Spanish", "Dominican peso", "the"),
    Country("Haiti", "North America", "Port-au-Prince", None, "Haitian gourde"),
    # South America
    Country("Brazil", "South America", "Brasilia", "Portuguese", "Brazilian real"),
    Country("Argentina", "South America", "Buenos Aires", "Spanish", "Argentine peso"),
    Country("Chile", "South America", "Santiago", "Spanish", "Chilean peso"),
    Country("Peru", "South America", "Lima", "Spanish", "Peruvian sol"),
    Country("Colombia", "South America", "Bogota", "Spanish", "Colombian peso"),
    Country("Venezuela", "South America", "Caracas", "Spanish", "Venezuelan bolivar"),
    Country("Ecuador", "South America", "Quito", "Spanish", "US dollar"),
    Country("Uruguay", "South America", "Montevideo", "Spanish", "Uruguayan peso"),
    Country("Paraguay", "South America", "Asuncion", None, "Paraguayan guarani"),
    Country("Guyana", "South America", "Georgetown", None, "Guyanese dollar"),
    Country("Suriname", "South America", "Paramaribo", None, "Surinamese dollar"),
    # Oceania
    Country("Australia", "Oceania", "Canberra", "English", "Australian dollar"),
    Country("New Zealand", "Oceania", "Wellington", "English", "New Zealand dollar"),
    Country("Fiji", "Oceania", "Suva", None, "Fijian dollar"),
    Country("Papua New Guinea", "Oceania", "Port Moresby", None, "Papua New Guinean kina"),
    Country("Samoa", "Oceania", "Apia", "Samoan", "Samoan tala"),
    Country("Vanuatu", "Oceania", "Port Vila", None, "Vanuatu vatu"),
)

# Mercury and lead are left out: "mercury" would clash with the planet and "lead" is a common verb.
ELEMENTS = (
    Element("hydrogen", "H", 1, "nonmetal", "gas"),
    Element("helium", "He", 2, "noble gas", "gas"),
    Element("lithium", "Li", 3, "metal", "solid"),
    Element("beryllium", "Be", 4, "metal", "solid"),
    Element("boron", "B", 5, "metalloid", "solid"),
    Element("carbon", "C", 6, "nonmetal", "solid"),
    Element("nitrogen", "N", 7, "nonmetal", "gas"),
    Element("oxygen", "O", 8, "nonmetal", "gas"),
    Element("fluorine", "F", 9, "nonmetal", "gas"),
    Element("neon", "Ne", 10, "noble gas", "gas"),
    Element("sodium", "Na", 11, "metal", "solid"),
    Element("magnesium", "Mg", 12, "metal", "solid"),
    Element("aluminium", "Al", 13, "metal", "solid"),
    Element("silicon", "Si", 14, "metalloid", "solid"),
    Element("phosphorus", "P", 15, "nonmetal", "solid"),
    Element("sulfur", "S", 16, "nonmetal", "solid"),
    Element("chlorine", "Cl", 17, "nonmetal", "gas"),
    Element("argon", "Ar", 18, "noble gas", "gas"),
    Element("potassium", "K", 19, "metal", "solid"),
    Element("calcium", "Ca", 20, "metal", "solid"),
    Element("scandium", "Sc", 21, "metal", "solid"),
    Element("titanium", "Ti", 22, "metal", "solid"),
    Element("vanadium", "V", 23, "metal", "solid"),
    Element("chromium", "Cr", 24, "metal", "solid"),
    Element("manganese", "Mn", 25, "metal", "solid"),
    Element("iron", "Fe", 26, "metal", "solid"),
    Element("cobalt", "Co", 27, "metal", "solid"),
    Element("nickel", "Ni", 28, "metal", "solid"),
    Element("copper", "Cu", 29, "metal", "solid"),
    Element("zinc", "Zn", 30, "metal", "solid"),
    Element("germanium", "Ge", 32, "metalloid", "solid"),
    Element("arsenic", "As", 33, "metalloid", "solid"),
    Element("selenium", "Se", 34, "nonmetal", "solid"),
    Element("bromine", "Br", 35, "nonmetal", "liquid"),
    Element("krypton", "Kr", 36, "noble gas", "gas"),
    Element("rubidium", "Rb", 37, "metal", "solid"),
    Element("strontium", "Sr", 38, "metal", "solid"),
    Element("zirconium", "Zr", 40, "metal", "solid"),
    Element("molybdenum", "Mo", 42, "metal", "solid"),
    Element("palladium", "Pd", 46, "metal", "solid"),
    Element("silver", "Ag", 47, "metal", "solid"),
    Element("cadmium", "Cd", 48, "metal", "solid"),
    Element("tin", "Sn", 50, "metal", "solid"),
    Element("antimony", "Sb", 51, "metalloid", "solid"),
    Element("tellurium", "Te", 52, "metalloid", "solid"),
    Element("iodine", "I", 53, "nonmetal", "solid"),
    Element("xenon", "Xe", 54, "noble gas", "gas"),
    Element("barium", "Ba", 56, "metal", "solid"),
    Element("tungsten", "W", 74, "metal", "solid"),
    Element("platinum", "Pt", 78, "metal", "solid"),
    Element("gold", "Au", 79, "metal", "solid"),
    Element("bismuth", "Bi", 83, "metal", "solid"),
    Element("radon", "Rn", 86, "noble gas", "gas"),
    Element("radium", "Ra", 88, "metal", "solid"),
    Element("uranium", "U", 92, "metal", "solid"),
    Element("plutonium", "Pu", 94, "metal", "solid"),
)

ANIMALS = (
    Animal("lion", "mammal", "in the savanna", "carnivore"),
    Animal("African elephant", "mammal", "in the savanna", "herbivore"),
    Animal("zebra", "mammal", "in the savanna", "herbivore"),
    Animal("giraffe", "mammal", "in the savanna", "herbivore"),
    Animal("cheetah", "mammal", "in the savanna", "carnivore"),
    Animal("hippopotamus", "mammal", "in rivers and lakes", "herbivore"),
    Animal("camel", "mammal", "in the desert", "herbivore"),
    Animal("polar bear", "mammal", "in the Arctic", "carnivore"),
    Animal("brown bear", "mammal", "in forests", "omnivore"),
    Animal("gray wolf", "mammal", "in forests", "carnivore"),
    Animal("red fox", "mammal", "in forests", "omnivore"),
    Animal("moose", "mammal", "in forests", "herbivore"),
    Animal("tiger", "mammal", "in forests", "carnivore"),
    Animal("gorilla", "mammal", "in tropical forests", "herbivore"),
    Animal("chimpanzee", "mammal", "in tropical forests", "omnivore"),
    Animal("koala", "mammal", "in eucalyptus forests", "herbivore"),
    Animal("kangaroo", "mammal", "in grasslands", "herbivore"),
    Animal("rabbit", "mammal", "in grasslands", "herbivore"),
    Animal("beaver", "mammal", "in rivers and lakes", "herbivore"),
    Animal("blue whale", "mammal", "in the ocean", "carnivore"),
    Animal("bottlenose dolphin", "mammal", "in the ocean", "carnivore"),
    Animal("walrus", "mammal", "in the Arctic", "carnivore"),
    Animal("cow", "mammal", "on farms", "herbivore"),
    Animal("sheep", "mammal", "on farms", "herbivore"),
    Animal("goat", "mammal", "on farms", "herbivore"),
    Animal("horse", "mammal", "on farms", "herbivore"),
    Animal("pig", "mammal", "on farms", "omnivore"),
    Animal("chicken", "bird", "on farms", "omnivore"),
    Animal("golden eagle", "bird", "in the mountains", "carnivore"),
    Animal("emperor penguin", "bird", "in Antarctica", "carnivore"),
    Animal("ostrich", "bird", "in the savanna", "omnivore"),
    Animal("snowy owl", "bird", "in the Arctic", "carnivore"),
    Animal("scarlet macaw", "bird", "in rainforests", "herbivore"),
    Animal("wandering albatross", "bird", "over the ocean", "carnivore"),
    Animal("brown pelican", "bird", "along the coast", "carnivore"),
    Animal("Nile crocodile", "reptile", "in rivers and lakes", "carnivore"),
    Animal("leatherback turtle", "reptile", "in the ocean", "carnivore"),
    Animal("desert tortoise", "reptile", "in the desert", "herbivore"),
    Animal("green iguana", "reptile", "in rainforests", "herbivore"),
    Animal("Komodo dragon", "reptile", "on tropical islands", "carnivore"),
    Animal("king cobra", "reptile", "in forests", "carnivore"),
    Animal("chameleon", "reptile", "in forests", "carnivore"),
    Animal("frog", "amphibian", "in ponds and wetlands", "carnivore"),
    Animal("axolotl", "amphibian", "in lakes", "carnivore"),
    Animal("fire salamander", "amphibian", "in forests", "carnivore"),
    Animal("great crested newt", "amphibian", "in ponds", "carnivore"),
    Animal("great white shark", "fish", "in the ocean", "carnivore"),
    Animal("Atlantic salmon", "fish", "in rivers and the ocean", "carnivore"),
    Animal("bluefin tuna", "fish", "in the ocean", "carnivore"),
    Animal("goldfish", "fish", "in ponds", "omnivore"),
    Animal("seahorse", "fish", "in the ocean", "carnivore"),
    Animal("honeybee", "insect", "in hives", "herbivore"),
    Animal("monarch butterfly", "insect", "in meadows", "herbivore"),
    Animal("ladybird", "insect", "in gardens", "carnivore"),
    Animal("grasshopper", "insect", "in grasslands", "herbivore"),
    Animal("dragonfly", "insect", "near ponds and rivers", "carnivore"),
    Animal("octopus", "mollusc", "in the ocean", "carnivore"),
    Animal("garden snail", "mollusc", "in gardens", "herbivore"),
    Animal("hermit crab", "crustacean", "along the coast", "omnivore"),
)

PLANETS = (
    Planet("Mercury", "first", "rocky planet", "no moons"),
    Planet("Venus", "second", "rocky planet", "no moons"),
    Planet("Earth", "third", "rocky planet", "one moon"),
    Planet("Mars", "fourth", "rocky planet", "two moons"),
    Planet("Jupiter", "fifth", "gas giant", "many moons"),
    Planet("Saturn", "sixth", "gas giant", "many moons"),
    Planet("Uranus", "seventh", "ice giant", "many moons"),
    Planet("Neptune", "eighth", "ice giant", "many moons"),
)

# The numbers that get a document of their own (arithmetic facts about each).
NUMBERS = tuple(range(1, 61))
