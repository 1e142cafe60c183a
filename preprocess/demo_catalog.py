"""Deterministic demo data: the README's eight items and three users, plus a generated shop.

The README tells a story (alice likes Apple, bob tech and gaming, carol cooking); the generated
catalog and users give the content and collaborative models enough signal for that story to hold.
Everything comes from fixed seeds and a fixed base time, so every call on every machine is equal.
"""
from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import NamedTuple

from recommenders.records import EventType, InteractionRecord, ItemRecord

SEED = 2026
BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
HOUR, DAY = 3600.0, 86400.0
ITEMS_PER_CATEGORY = 75
GENERATED_USERS = 40

README_ITEMS = (
    ItemRecord("iphone", "iPhone 15", "electronics", "Apple",
               "Smartphone with a Super Retina display, a 48MP camera and all-day battery life.",
               ("smartphone", "mobile", "camera", "ios"), 799.0),
    ItemRecord("macbook", "MacBook Air", "electronics", "Apple",
               "Thin and light laptop with the M3 chip, a Retina display and fanless design.",
               ("laptop", "computing", "portable", "macos"), 1099.0),
    ItemRecord("ipad", "iPad Air", "electronics", "Apple",
               "Tablet with a Liquid Retina display and Apple Pencil support for notes and drawing.",
               ("tablet", "mobile", "drawing", "ipados"), 599.0),
    ItemRecord("airpods", "AirPods Pro", "electronics", "Apple",
               "Wireless earbuds with active noise cancellation and spatial audio.",
               ("earbuds", "audio", "wireless", "bluetooth"), 249.0),
    ItemRecord("coffee_maker", "Barista Express Espresso Machine", "kitchen", "Breville",
               "Espresso machine with a built-in grinder and steam wand for cafe coffee at home.",
               ("coffee", "espresso", "appliance", "breakfast"), 699.95),
    ItemRecord("kitchen_knife", "Classic 8-inch Chef's Knife", "kitchen", "Wüsthof",
               "Forged stainless steel chef's knife with a full tang for precise chopping.",
               ("knife", "cutlery", "stainless-steel", "cooking"), 169.95),
    ItemRecord("cookbook", "Salt, Fat, Acid, Heat", "kitchen", "Simon & Schuster",
               "Cookbook that teaches the four elements of good cooking with illustrated recipes.",
               ("cookbook", "recipes", "cooking", "book"), 35.0),
    ItemRecord("gaming_chair", "Titan Evo Gaming Chair", "furniture", "Secretlab",
               "Ergonomic gaming chair with adjustable lumbar support and magnetic memory foam pillow.",
               ("chair", "gaming", "ergonomic", "office"), 549.0),
)

README_RATINGS = {
    "alice": (("iphone", 5), ("macbook", 4), ("coffee_maker", 3)),
    "bob": (("iphone", 5), ("macbook", 4), ("gaming_chair", 5)),
    "carol": (("coffee_maker", 4), ("kitchen_knife", 5), ("cookbook", 4)),
}


class Vocabulary(NamedTuple):
    """Words one category's products are built from; one table drives the single generator."""

    name: str  # format with {brand}, {adj}, {noun}
    blurb: str  # format with {adj}, {noun}, {f1}, {f2}, {use}
    brands: tuple[str, ...]
    adjectives: tuple[str, ...]
    nouns: dict[str, float]  # product kind -> typical price
    features: tuple[str, ...]
    uses: tuple[str, ...]
    tags: tuple[str, ...]


VOCABULARIES = {
    "electronics": Vocabulary(
        "{brand} {adj} {noun}", "{adj} {noun} with {f1} and {f2}, built for {use}.",
        ("Apple", "Samsung", "Sony", "Logitech", "Bose", "Anker", "Dell", "LG"),
        ("Compact", "Pro", "Ultra", "Slim", "Smart", "Portable", "Premium", "Studio"),
        {"Headphones": 199, "Earbuds": 129, "Smartphone": 699, "Laptop": 1199, "Tablet": 499,
         "Smartwatch": 299, "Keyboard": 89, "Mouse": 49, "Monitor": 349, "Speaker": 149,
         "Webcam": 79, "Charger": 29},
        ("bluetooth connectivity", "long battery life", "fast charging", "usb-c charging",
         "a sleek aluminium body", "voice assistant support", "low latency", "a two-year warranty"),
        ("remote work", "gaming sessions", "music on the go", "video calls", "photo editing", "travel"),
        ("wireless", "gadget", "tech", "bluetooth", "portable", "audio", "computing", "mobile")),
    "kitchen": Vocabulary(
        "{brand} {adj} {noun}", "{adj} {noun} featuring {f1} and {f2}, perfect for {use}.",
        ("KitchenAid", "Le Creuset", "Breville", "Lodge", "OXO", "Cuisinart", "Zwilling", "Smeg"),
        ("Classic", "Professional", "Artisan", "Everyday", "Signature", "Deluxe", "Heritage", "Mini"),
        {"Dutch Oven": 249, "Chef's Knife": 119, "Stand Mixer": 399, "Blender": 129, "Skillet": 59,
         "Saucepan": 79, "Espresso Machine": 499, "Toaster": 69, "Cutting Board": 39, "Kettle": 59,
         "Food Processor": 199, "Knife Set": 249},
        ("enamelled cast iron", "a stainless steel blade", "even heat distribution",
         "a dishwasher safe finish", "a forged handle", "nonstick coating", "a powerful motor",
         "precise temperature control"),
        ("weeknight dinners", "baking bread", "brewing espresso", "slow braising", "meal prep",
         "holiday feasts"),
        ("cooking", "cookware", "baking", "appliance", "coffee", "cutlery", "recipes", "chef")),
    "furniture": Vocabulary(
        "{brand} {adj} {noun}", "{adj} {noun} with {f1} and {f2}, designed for {use}.",
        ("IKEA", "Herman Miller", "Steelcase", "West Elm", "Secretlab", "Article", "Muuto", "HAY"),
        ("Ergonomic", "Modern", "Scandinavian", "Mid-Century", "Minimalist", "Oak", "Walnut", "Compact"),
        {"Desk Chair": 299, "Standing Desk": 599, "Bookshelf": 179, "Sofa": 1299, "Coffee Table": 249,
         "Floor Lamp": 129, "Dining Table": 799, "Bed Frame": 499, "Dresser": 449, "Gaming Chair": 399,
         "Office Chair": 699, "Armchair": 549},
        ("solid oak legs", "adjustable lumbar support", "breathable mesh", "a walnut veneer",
         "soft upholstery", "a powder-coated steel frame", "hidden storage", "adjustable height"),
        ("home offices", "small apartments", "long gaming sessions", "living rooms", "reading corners"),
        ("home", "decor", "ergonomic", "office", "living-room", "storage", "wood", "seating")),
    "books": Vocabulary(
        "{adj} {noun}", "A book on {noun} covering {f1} and {f2}, written for {use}.",
        ("Penguin", "O'Reilly", "HarperCollins", "Vintage", "No Starch Press", "Ten Speed Press",
         "Knopf", "Random House"),
        ("Practical", "The Art of", "Mastering", "Essential", "A Short History of", "The Joy of",
         "Learning", "Modern"),
        {"Python Programming": 49, "Machine Learning": 59, "Sourdough Baking": 29, "Personal Finance": 19,
         "Garden Design": 35, "Ancient Rome": 22, "Astronomy": 28, "Photography": 39, "Woodworking": 32,
         "Chess Strategy": 24, "Mindfulness": 16, "Italian Cooking": 34},
        ("worked examples", "practical exercises", "historical context", "beautiful illustrations",
         "step by step recipes", "real world case studies", "clear diagrams"),
        ("beginners", "curious readers", "students", "experienced practitioners", "home cooks",
         "weekend hobbyists"),
        ("book", "paperback", "nonfiction", "learning", "reference", "hobby", "bestseller", "guide")),
}

APPLE_ANCHORS = ("iphone", "macbook", "ipad", "airpods")


class Persona(NamedTuple):
    """A taste profile: favourite categories, an optional brand, items such users tend to own."""

    favourites: tuple[str, ...]
    brand: str
    anchors: tuple[str, ...]
    anchor_chance: float


PERSONAS = (
    Persona(("electronics",), "Apple", APPLE_ANCHORS, 1.0),
    Persona(("electronics",), "", APPLE_ANCHORS, 0.6),
    Persona(("kitchen",), "", ("coffee_maker", "kitchen_knife", "cookbook"), 0.8),
    Persona(("electronics", "furniture"), "Logitech", ("gaming_chair", "airpods"), 0.8),
    Persona(("books",), "", (), 0.0),
    Persona(("kitchen", "books"), "", ("cookbook",), 0.8),
    Persona(("furniture",), "IKEA", (), 0.0),
)


def _generate_category(category: str, vocab: Vocabulary, rng: random.Random) -> list[ItemRecord]:
    combos = [(b, a, n) for b in vocab.brands for a in vocab.adjectives for n in vocab.nouns]
    items = []
    for number, (brand, adj, noun) in enumerate(rng.sample(combos, ITEMS_PER_CATEGORY), start=1):
        f1, f2 = rng.sample(vocab.features, 2)
        blurb = vocab.blurb.format(adj=adj.lower(), noun=noun.lower(), f1=f1, f2=f2, use=rng.choice(vocab.uses))
        tags = (noun.lower().replace(" ", "-").replace("'", ""), *rng.sample(vocab.tags, rng.randint(2, 5)))
        price = max(5, round(vocab.nouns[noun] * rng.uniform(0.6, 1.5))) - 0.01
        items.append(ItemRecord(f"{category}_{number:03d}", vocab.name.format(brand=brand, adj=adj, noun=noun),
                                category, brand, blurb[0].upper() + blurb[1:], tags, price))
    return items


def demo_items() -> list[ItemRecord]:
    """The README items first, then ~300 generated products with text rich enough for TF-IDF."""
    rng = random.Random(SEED)
    generated = [item for category, vocab in VOCABULARIES.items() for item in _generate_category(category, vocab, rng)]
    return [*README_ITEMS, *generated]


def demo_user_ids() -> list[str]:
    """The README's three users, then the generated ones."""
    return [*README_RATINGS, *(f"user_{n:03d}" for n in range(1, GENERATED_USERS + 1))]


def _rating(rng: random.Random, item: ItemRecord, persona: Persona) -> int:
    """Favourite categories score high, the persona's brand higher still, the rest lower."""
    if item.category not in persona.favourites:
        return rng.choice((1, 2, 2, 3, 4))
    return min(5, rng.choice((3, 4, 4, 5, 5)) + (item.brand == persona.brand))


def _session(rng: random.Random, item: ItemRecord, persona: Persona, owned: bool) -> list[tuple[EventType, int | None]]:
    """One visit to an item along the funnel: view, maybe cart, maybe purchase, maybe a rating."""
    events: list[tuple[EventType, int | None]] = [(EventType.VIEW, None)]
    carted = owned or rng.random() < 0.3
    purchased = owned or (carted and rng.random() < 0.6)
    if carted:
        events.append((EventType.ADD_TO_CART, None))
    if purchased:
        events.append((EventType.PURCHASE, None))
    if owned:
        events.append((EventType.RATING, rng.choice((4, 5, 5))))
    elif rng.random() < (0.6 if purchased else 0.1):
        events.append((EventType.RATING, _rating(rng, item, persona)))
    return events


def _user_history(user_id: str, persona: Persona, target: int, items: list[ItemRecord],
                  rng: random.Random) -> list[InteractionRecord]:
    """Owned anchor items first, then items drawn by taste, cut to `target` events, times increasing."""
    by_id = {item.item_id: item for item in items}
    owned = [by_id[i] for i in persona.anchors if rng.random() < persona.anchor_chance]

    def weight(item: ItemRecord) -> float:
        if item.category not in persona.favourites:
            return 0.05
        return 4.0 if item.brand == persona.brand else 1.0

    # Weighted sampling without replacement: sort by u ** (1 / weight).
    browsed = sorted((i for i in items if i not in owned), key=lambda i: rng.random() ** (1 / weight(i)), reverse=True)
    events: list[tuple[ItemRecord, EventType, int | None]] = []
    for item in [*owned, *browsed]:
        events += [(item, kind, rating) for kind, rating in _session(rng, item, persona, item in owned)]
        if len(events) >= target:
            break
    history, clock = [], BASE_TIME + rng.uniform(0, 30 * DAY)
    for item, kind, rating in events[:target]:
        clock += rng.uniform(30, 600) if kind is not EventType.VIEW else rng.uniform(HOUR, 3 * DAY)
        history.append(InteractionRecord(user_id, item.item_id, kind, float(round(clock)),
                                         None if rating is None else float(rating)))
    return history


def demo_interactions() -> list[InteractionRecord]:
    """All events ordered by time: the README ratings verbatim, then generated users' histories."""
    rng = random.Random(SEED + 1)
    items = demo_items()
    events = [InteractionRecord(user, item, EventType.RATING, BASE_TIME + DAY * u + HOUR * (n + 1), float(rating))
              for u, (user, ratings) in enumerate(README_RATINGS.items()) for n, (item, rating) in enumerate(ratings)]
    # History lengths spread from 3 to 60 events, skewed towards short ones.
    targets = [round(3 + 57 * (n / (GENERATED_USERS - 1)) ** 2) for n in range(GENERATED_USERS)]
    rng.shuffle(targets)
    for n, user_id in enumerate(demo_user_ids()[len(README_RATINGS):]):
        events += _user_history(user_id, PERSONAS[n % len(PERSONAS)], targets[n], items, rng)
    return sorted(events, key=lambda e: e.timestamp)
