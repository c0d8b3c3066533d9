"""Generate the bundled sample data for backprop.

Running ``python3 tools/make_sample_data.py`` from the repository root writes:

* ``src/backprop_engine/resources/sample.jsonl`` - about 320 short chat
  conversations in OpenAI ``messages`` JSONL form.  The assistant always
  speaks in one very learnable pirate style: every reply starts with
  "Arr, matey! ", ends with " Yo ho ho!", and in between gives a short,
  correct answer.  The style is deliberately obvious so that a tiny
  (about 2M parameter) model trained for a few dozen steps visibly
  imitates it, which makes fine-tuning demos and smoke tests easy to judge.
* ``src/backprop_engine/resources/corpus.txt`` - plain ASCII English text
  (about 200 KB) for training a small byte-level BPE tokenizer.  It holds
  every message of the sample conversations plus general English prose,
  numbers, lists, questions and code-like lines, so the tokenizer learns
  common English rather than only pirate phrases.

Everything is built from templates and small fact tables in this file, with
a fixed seed, so the output is deterministic and the facts are correct.
Only the standard library is used.
"""

import json
import random
from pathlib import Path

SEED = 1234
TARGET_ROWS = 320
SYSTEM_FRACTION = 0.15
MULTI_TURN_FRACTION = 0.15
CORPUS_TARGET_BYTES = 200_000

REPO_ROOT = Path(__file__).resolve().parent.parent
RESOURCES = REPO_ROOT / "src" / "backprop_engine" / "resources"
SAMPLE_PATH = RESOURCES / "sample.jsonl"
CORPUS_PATH = RESOURCES / "corpus.txt"

REPLY_PREFIX = "Arr, matey! "
REPLY_SUFFIX = " Yo ho ho!"

# ---------------------------------------------------------------- fact tables

CAPITALS = [
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Canada", "Ottawa"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Ireland", "Dublin"),
    ("Poland", "Warsaw"),
    ("Austria", "Vienna"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("India", "New Delhi"),
    ("Australia", "Canberra"),
    ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"),
    ("Chile", "Santiago"),
    ("Cuba", "Havana"),
    ("Thailand", "Bangkok"),
    ("Turkey", "Ankara"),
    ("Denmark", "Copenhagen"),
    ("Finland", "Helsinki"),
    ("Hungary", "Budapest"),
    ("Belgium", "Brussels"),
]

ANIMAL_SOUNDS = [
    ("dog", "barks"),
    ("cat", "meows"),
    ("cow", "moos"),
    ("duck", "quacks"),
    ("sheep", "baas"),
    ("horse", "neighs"),
    ("pig", "oinks"),
    ("lion", "roars"),
    ("owl", "hoots"),
    ("snake", "hisses"),
    ("frog", "croaks"),
    ("mouse", "squeaks"),
    ("bee", "buzzes"),
    ("wolf", "howls"),
    ("donkey", "brays"),
    ("rooster", "crows"),
]

ANIMAL_HOMES = [
    ("bird", "a nest"),
    ("bee", "a hive"),
    ("fish", "the water"),
    ("rabbit", "a burrow"),
    ("bear", "a den"),
    ("spider", "a web"),
    ("horse", "a stable"),
    ("pig", "a sty"),
    ("dog", "a kennel"),
    ("ant", "an anthill"),
]

THING_COLOURS = [
    ("the sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("a banana", "yellow"),
    ("a ripe tomato", "red"),
    ("coal", "black"),
    ("an orange", "orange"),
    ("a lemon", "yellow"),
    ("a carrot", "orange"),
    ("chocolate", "brown"),
    ("a lime", "green"),
    ("a strawberry", "red"),
    ("milk", "white"),
    ("the sea", "blue"),
]

COLOUR_MIXES = [
    ("red", "yellow", "orange"),
    ("blue", "yellow", "green"),
    ("red", "blue", "purple"),
    ("red", "white", "pink"),
    ("black", "white", "grey"),
]

OPPOSITES = [
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("light", "dark"),
    ("open", "closed"),
    ("old", "new"),
    ("wet", "dry"),
    ("early", "late"),
    ("loud", "quiet"),
    ("full", "empty"),
    ("hard", "soft"),
    ("tall", "short"),
    ("rich", "poor"),
    ("strong", "weak"),
    ("day", "night"),
    ("left", "right"),
    ("in", "out"),
    ("win", "lose"),
]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

SPELL_WORDS = [
    "ship",
    "anchor",
    "treasure",
    "parrot",
    "island",
    "ocean",
    "compass",
    "sail",
    "map",
    "gold",
    "wave",
    "harbor",
    "captain",
    "rope",
    "storm",
    "pirate",
    "beach",
    "cannon",
]

NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]

SCIENCE_FACTS = [
    ("What do plants need to grow?", "Plants need sunlight, water and good soil to grow."),
    ("Why is the sky blue?", "Sunlight scatters in the air, and blue light scatters most."),
    ("What is water made of?", "Water be made of hydrogen and oxygen."),
    ("At what temperature does water boil?", "Water boils at 100 degrees Celsius at sea level."),
    ("At what temperature does water freeze?", "Water freezes at 0 degrees Celsius."),
    ("What is the closest star to Earth?", "The closest star be the Sun, our own bright lantern."),
    ("How many planets are in our solar system?", "There be eight planets in our solar system."),
    ("What is the biggest planet?", "Jupiter be the biggest planet of them all."),
    ("What pulls things down to the ground?", "Gravity pulls everything down, even cannonballs."),
    ("What gas do we breathe in?", "We breathe in oxygen from the air."),
    ("What causes the tides?", "The Moon's pull on the sea causes the tides."),
    ("What is ice?", "Ice be water that has frozen solid."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("How many legs does an insect have?", "An insect has six legs."),
    ("Is a whale a fish?", "No, a whale be a mammal that breathes air."),
    ("What makes a rainbow?", "Sunlight bending through raindrops makes a rainbow."),
    ("Where does the Sun rise?", "The Sun rises in the east every morning."),
    ("Where does the Sun set?", "The Sun sets in the west every evening."),
    ("What is the Moon?", "The Moon be a rocky ball that circles the Earth."),
    ("Why do we have seasons?", "The Earth is tilted, so each half gets more sun at different times."),
]

WEATHER_QA = [
    ("What should I wear when it rains?", "Wear a raincoat and boots to stay dry."),
    ("What should I wear on a cold day?", "Wear a warm coat, a hat and gloves."),
    ("What should I wear on a hot day?", "Wear light clothes and a hat to keep cool."),
    ("What is a storm?", "A storm be strong wind with rain, and sometimes thunder."),
    ("Why does it snow?", "It snows when clouds are cold enough to freeze the water."),
    ("What is fog?", "Fog be a cloud that sits low on the ground."),
    ("What comes after lightning?", "Thunder comes after lightning, rumbling like a cannon."),
    ("Is it safe to swim in a thunderstorm?", "No, get out of the water when thunder rolls."),
    ("What is a breeze?", "A breeze be a gentle, friendly wind."),
    ("How do I know if it will rain?", "Look for dark clouds or check the weather forecast."),
    ("What is hail?", "Hail be little balls of ice that fall from storm clouds."),
    ("What is a heat wave?", "A heat wave be many very hot days in a row."),
]

COOKING_QA = [
    ("How do I boil an egg?", "Put the egg in boiling water for about eight minutes."),
    ("How do I make toast?", "Put bread in a toaster until it turns golden brown."),
    ("How do I make tea?", "Pour hot water over a tea bag and wait three minutes."),
    ("How do I cook rice?", "Simmer one cup of rice in two cups of water until soft."),
    ("How do I make a sandwich?", "Put your filling between two slices of bread."),
    ("How do I make pancakes?", "Mix flour, eggs and milk, then fry small rounds in a pan."),
    ("How do I cook pasta?", "Boil pasta in salted water until it is tender."),
    ("How do I make a salad?", "Chop fresh vegetables and toss them with a little dressing."),
    ("How do I keep bread fresh?", "Keep bread in a closed bag in a cool, dry place."),
    ("How do I make lemonade?", "Mix lemon juice, water and sugar, then add ice."),
    ("How do I make soup?", "Simmer vegetables in water or stock until soft."),
    ("How do I scramble eggs?", "Whisk eggs and stir them in a hot pan with butter."),
    ("How do I wash vegetables?", "Rinse them under cold running water."),
    ("How do I make popcorn?", "Heat corn kernels in a covered pot until they pop."),
]

GREETINGS = [
    ("Hello!", "Hello to ye too, welcome aboard."),
    ("Hi there!", "Ahoy there, good to see ye."),
    ("Good morning!", "Good morning to ye, the sun be shining on the deck."),
    ("Good night!", "Good night, sleep well in yer hammock."),
    ("How are you?", "I be fine and full of sea air, thank ye."),
    ("What is your name?", "I be yer friendly helper, sailing the seas of questions."),
    ("Thank you!", "Ye be most welcome, friend."),
    ("Goodbye!", "Farewell, and fair winds to ye."),
    ("Can you help me?", "Aye, I can help ye, just ask away."),
    ("Good evening!", "Good evening, the stars be out over the sea."),
    ("Nice to meet you.", "Nice to meet ye too, shipmate."),
    ("Are you a robot?", "I be a computer helper, but I talk like a pirate."),
]

JOKES = [
    ("Tell me a joke.", "Why did the pirate buy an eyepatch? He could not afford a whole patch."),
    ("Do you know a funny joke?", "What is a pirate's favourite letter? Ye think it be R, but it be the C."),
    ("Tell me a joke about fish.", "Why are fish so smart? They live in schools."),
    ("Tell me a joke about the sea.", "What did the ocean say to the beach? Nothing, it just waved."),
    ("Tell me a joke about cats.", "Why did the cat sit on the computer? To keep an eye on the mouse."),
    ("Tell me a joke about dogs.", "What do ye call a dog magician? A labracadabrador."),
    ("Can you tell me a short joke?", "Why did the bicycle fall over? It was two tired."),
    ("Tell me a joke about food.", "Why did the tomato blush? It saw the salad dressing."),
    ("Make me laugh.", "Why do pirates not take baths? They wash up on shore."),
    ("Tell me a joke about the moon.", "How does the Moon cut his hair? Eclipse it."),
]

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a friendly pirate assistant.",
    "You are a helpful assistant. Keep answers short.",
    "Answer the user's question briefly.",
    "You are a cheerful helper who talks like a pirate.",
    "You are a patient tutor for young learners.",
]

# ----------------------------------------------------------- question makers


def capital_pairs(rng):
    """Questions about capital cities."""
    pairs = []
    for country, capital in CAPITALS:
        question = rng.choice(
            [
                f"What is the capital of {country}?",
                f"Which city is the capital of {country}?",
                f"Tell me the capital of {country}.",
            ]
        )
        answer = rng.choice(
            [
                f"The capital of {country} be {capital}, a fine port.",
                f"The capital of {country} be {capital}.",
                f"{capital} be the capital of {country}, sure as the tide.",
            ]
        )
        pairs.append((question, answer))
    return pairs


def animal_pairs(rng):
    """Questions about animal sounds and homes."""
    pairs = []
    for animal, sound in ANIMAL_SOUNDS:
        question = rng.choice(
            [
                f"What sound does a {animal} make?",
                f"What noise does a {animal} make?",
            ]
        )
        pairs.append((question, f"A {animal} {sound}, loud as a ship's bell."))
    for animal, home in ANIMAL_HOMES:
        pairs.append((f"Where does a {animal} live?", f"A {animal} lives in {home}."))
    return pairs


def colour_pairs(rng):
    """Questions about colours of things and colour mixing."""
    pairs = []
    for thing, colour in THING_COLOURS:
        pairs.append((f"What colour is {thing}?", f"{thing.capitalize()} be {colour}."))
    for first, second, mix in COLOUR_MIXES:
        pairs.append(
            (
                f"What do you get when you mix {first} and {second}?",
                f"Mix {first} and {second} and ye get {mix}.",
            )
        )
    return pairs


def arithmetic_pairs(rng, count=40):
    """Small addition, subtraction and multiplication questions, all correct."""
    pairs = []
    seen = set()
    while len(pairs) < count:
        op = rng.choice(["plus", "minus", "times"])
        a, b = rng.randint(1, 12), rng.randint(1, 12)
        if op == "minus" and b > a:
            a, b = b, a
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        result = {"plus": a + b, "minus": a - b, "times": a * b}[op]
        question = rng.choice([f"What is {a} {op} {b}?", f"How much is {a} {op} {b}?"])
        answer = rng.choice(
            [
                f"{a} {op} {b} be {result}.",
                f"{a} {op} {b} be {result}, easy as counting doubloons.",
            ]
        )
        pairs.append((question, answer))
    return pairs


def day_pairs(rng):
    """Questions about the order of days and months."""
    pairs = []
    for i, day in enumerate(DAYS):
        nxt, prev = DAYS[(i + 1) % 7], DAYS[(i - 1) % 7]
        pairs.append((f"What day comes after {day}?", f"After {day} comes {nxt}."))
        pairs.append((f"What day comes before {day}?", f"Before {day} comes {prev}."))
    for i, month in enumerate(MONTHS):
        nxt = MONTHS[(i + 1) % 12]
        pairs.append((f"What month comes after {month}?", f"After {month} comes {nxt}."))
    pairs.append(("How many days are in a week?", "There be seven days in a week."))
    pairs.append(("How many months are in a year?", "There be twelve months in a year."))
    pairs.append(("What are the weekend days?", "The weekend be Saturday and Sunday."))
    return pairs


def opposite_pairs(rng):
    """Questions about opposite words."""
    pairs = []
    for word, opposite in OPPOSITES:
        question = rng.choice(
            [
                f"What is the opposite of {word}?",
                f"What is the opposite of the word {word}?",
            ]
        )
        pairs.append((question, f"The opposite of {word} be {opposite}."))
    return pairs


def spelling_pairs(rng):
    """Questions about spelling and letter counts."""
    pairs = []
    for word in SPELL_WORDS:
        letters = "-".join(word.upper())
        if rng.random() < 0.5:
            pairs.append((f"How do you spell {word}?", f"Ye spell {word} like this: {letters}."))
        else:
            pairs.append(
                (
                    f"How many letters are in the word {word}?",
                    f"The word {word} has {len(word)} letters.",
                )
            )
    return pairs


def number_word_pairs(rng):
    """Questions about writing numbers as words."""
    pairs = []
    for n in rng.sample(range(1, 21), 8):
        pairs.append((f"How do you write {n} in words?", f"Ye write {n} as {NUMBER_WORDS[n]}."))
    return pairs


def fixed_pairs():
    """Hand-written question and answer tables."""
    return SCIENCE_FACTS + WEATHER_QA + COOKING_QA + GREETINGS + JOKES


def all_pairs(rng):
    """Every distinct (question, answer body) pair, in a shuffled order."""
    pairs = (
        capital_pairs(rng)
        + animal_pairs(rng)
        + colour_pairs(rng)
        + arithmetic_pairs(rng)
        + day_pairs(rng)
        + opposite_pairs(rng)
        + spelling_pairs(rng)
        + number_word_pairs(rng)
        + fixed_pairs()
    )
    unique = list(dict.fromkeys(pairs))
    rng.shuffle(unique)
    return unique


# -------------------------------------------------------------- conversations


def pirate_reply(body):
    """Wrap an answer in the fixed pirate opening and closing."""
    return REPLY_PREFIX + body + REPLY_SUFFIX


def exchange(pair):
    """One user message and its assistant reply."""
    question, body = pair
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": pirate_reply(body)},
    ]


def build_conversations(rng):
    """About TARGET_ROWS unique conversations, some with system or two turns."""
    pairs = all_pairs(rng)
    conversations, seen = [], set()
    index = 0
    while len(conversations) < TARGET_ROWS:
        multi = rng.random() < MULTI_TURN_FRACTION
        first = pairs[index % len(pairs)]
        index += 1
        messages = exchange(first)
        if multi:
            messages += exchange(rng.choice(pairs))
        if rng.random() < SYSTEM_FRACTION:
            messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        key = json.dumps(messages, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        conversations.append({"messages": messages})
    return conversations


# --------------------------------------------------------------------- prose

PEOPLE = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Iris",
    "Jamal",
    "Kate",
    "Leo",
    "Maria",
    "Noah",
    "Olga",
    "Priya",
    "my sister",
    "our neighbour",
    "the teacher",
    "a young boy",
    "an old man",
    "the doctor",
    "my friend",
    "the baker",
]
PLACES = [
    "the park",
    "the market",
    "the library",
    "the kitchen",
    "the garden",
    "the station",
    "the beach",
    "the office",
    "school",
    "the city centre",
    "the river",
    "the museum",
    "the shop on the corner",
    "the farm",
]
OBJECTS = [
    "a book",
    "an apple",
    "a letter",
    "a bicycle",
    "a cup of coffee",
    "a small box",
    "a red umbrella",
    "a new phone",
    "some bread",
    "a basket of fruit",
    "a pair of shoes",
    "a map",
    "a laptop",
    "a bottle of water",
    "a warm blanket",
    "a newspaper",
]
VERBS_PAST = [
    "found",
    "bought",
    "carried",
    "opened",
    "lost",
    "painted",
    "cleaned",
    "borrowed",
    "fixed",
    "sold",
    "wrapped",
    "dropped",
]
ADJECTIVES = [
    "quiet",
    "busy",
    "bright",
    "cold",
    "warm",
    "crowded",
    "peaceful",
    "noisy",
    "large",
    "small",
    "beautiful",
    "old",
    "modern",
    "friendly",
]
TIMES = [
    "in the morning",
    "after lunch",
    "on Monday",
    "last week",
    "yesterday",
    "at night",
    "every Sunday",
    "in the spring",
    "during the summer",
    "before dinner",
    "at noon",
    "in winter",
]
ADVERBS = [
    "slowly",
    "quickly",
    "carefully",
    "happily",
    "quietly",
    "suddenly",
    "finally",
    "usually",
    "often",
    "rarely",
]
TOPICS = [
    "the weather",
    "the news",
    "music",
    "football",
    "a new film",
    "the price of food",
    "their plans for the weekend",
    "science",
    "history",
    "computers",
    "the garden",
    "a long trip",
]
FRUITS = [
    "apples",
    "bananas",
    "oranges",
    "grapes",
    "pears",
    "cherries",
    "plums",
    "lemons",
    "peaches",
    "melons",
]
CODE_LINES = [
    "def add(a, b): return a + b",
    "def square(x): return x * x",
    "for i in range(10): print(i)",
    'if x > 0: print("positive")',
    "total = sum(values) / len(values)",
    'names = ["alice", "bob", "carol"]',
    "while count < 5: count += 1",
    'result = {"name": "box", "size": 3}',
    "import json; data = json.loads(text)",
    'with open("notes.txt") as f: lines = f.readlines()',
    "class Point: pass",
    "return max(a, b)",
    "x = 3; y = 4; print(x + y)",
    'print("Hello, world!")',
]


def number_phrase(rng):
    """A number written both as digits and as words."""
    n = rng.randint(0, 20)
    return f"{n} ({NUMBER_WORDS[n]})"


def story_sentence(rng):
    """A simple everyday sentence."""
    templates = [
        lambda: (
            f"{rng.choice(PEOPLE).capitalize()} {rng.choice(VERBS_PAST)} {rng.choice(OBJECTS)} at {rng.choice(PLACES)} {rng.choice(TIMES)}."
        ),
        lambda: (
            f"The {rng.choice(['street', 'room', 'market', 'train', 'park', 'cafe'])} was {rng.choice(ADJECTIVES)} {rng.choice(TIMES)}."
        ),
        lambda: f"{rng.choice(PEOPLE).capitalize()} walked {rng.choice(ADVERBS)} to {rng.choice(PLACES)}.",
        lambda: f"We talked about {rng.choice(TOPICS)} for a while, and then we went home.",
        lambda: f"There were {number_phrase(rng)} people waiting at {rng.choice(PLACES)}.",
        lambda: (
            f"She bought {rng.randint(2, 12)} {rng.choice(FRUITS)} and {rng.randint(2, 12)} {rng.choice(FRUITS)}."
        ),
        lambda: (
            f"It was a {rng.choice(ADJECTIVES)} day, so {rng.choice(PEOPLE)} stayed at {rng.choice(PLACES)}."
        ),
        lambda: f'"Where is {rng.choice(OBJECTS)}?" asked {rng.choice(PEOPLE)}.',
        lambda: (
            f"{rng.choice(PEOPLE).capitalize()} {rng.choice(ADVERBS)} said that {rng.choice(TOPICS)} was interesting."
        ),
        lambda: (
            f"The meeting starts at {rng.randint(1, 12)}:{rng.choice(['00', '15', '30', '45'])}, so please do not be late."
        ),
        lambda: (
            f"In {rng.choice(MONTHS)}, the weather is often {rng.choice(['mild', 'cold', 'hot', 'wet', 'windy', 'dry'])}."
        ),
        lambda: f"On {rng.choice(DAYS)}, {rng.choice(PEOPLE)} usually goes to {rng.choice(PLACES)}.",
    ]
    return rng.choice(templates)()


def arithmetic_sentence(rng):
    """A correct arithmetic statement in digits or words."""
    a, b = rng.randint(0, 10), rng.randint(0, 10)
    if rng.random() < 0.5:
        return f"{a} + {b} = {a + b}, and {a} * {b} = {a * b}."
    return f"{NUMBER_WORDS[a].capitalize()} plus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a + b] if a + b <= 20 else a + b}."


def question_line(rng):
    """A general question."""
    return rng.choice(
        [
            f"Have you ever been to {rng.choice(PLACES)}?",
            f"What do you think about {rng.choice(TOPICS)}?",
            f"Can you bring {rng.choice(OBJECTS)} tomorrow?",
            f"Why was {rng.choice(PLACES)} so {rng.choice(ADJECTIVES)} today?",
            f"How many {rng.choice(FRUITS)} do we need?",
            f"Who {rng.choice(VERBS_PAST)} {rng.choice(OBJECTS)}?",
        ]
    )


def list_block(rng):
    """A short shopping or to-do list."""
    title = rng.choice(["Shopping list:", "Things to do:", "Packing list:"])
    items = rng.sample(OBJECTS + [f"buy {f}" for f in FRUITS], 4)
    lines = [title] + [f"{i}. {item}" for i, item in enumerate(items, 1)]
    return "\n".join(lines)


def prose_paragraph(rng):
    """A paragraph mixing sentences, questions and arithmetic."""
    parts = [story_sentence(rng) for _ in range(rng.randint(3, 6))]
    if rng.random() < 0.4:
        parts.append(question_line(rng))
    if rng.random() < 0.3:
        parts.append(arithmetic_sentence(rng))
    return " ".join(parts)


def corpus_chunk(rng):
    """One block of corpus text: prose, a list, or a few code lines."""
    roll = rng.random()
    if roll < 0.75:
        return prose_paragraph(rng)
    if roll < 0.88:
        return list_block(rng)
    return "\n".join(rng.sample(CODE_LINES, 3))


def build_corpus(rng, conversations):
    """All conversation texts followed by general prose, as one string."""
    lines = [m["content"] for conv in conversations for m in conv["messages"]]
    text = "\n".join(lines) + "\n\n"
    chunks = []
    size = len(text)
    while size < CORPUS_TARGET_BYTES:
        chunk = corpus_chunk(rng)
        chunks.append(chunk)
        size += len(chunk) + 2
    return text + "\n\n".join(chunks) + "\n"


# ---------------------------------------------------------------------- main


def write_jsonl(path, rows):
    """Write one compact JSON object per line."""
    with path.open("w", encoding="ascii", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True) + "\n")


def main():
    rng = random.Random(SEED)
    RESOURCES.mkdir(parents=True, exist_ok=True)
    conversations = build_conversations(rng)
    write_jsonl(SAMPLE_PATH, conversations)
    corpus = build_corpus(rng, conversations)
    CORPUS_PATH.write_text(corpus, encoding="ascii", newline="\n")
    print(f"wrote {len(conversations)} conversations to {SAMPLE_PATH}")
    print(f"wrote {len(corpus)} bytes to {CORPUS_PATH}")


if __name__ == "__main__":
    main()
