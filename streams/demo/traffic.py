"""Seeded shoppers of a home-goods web shop, producing realistic CDP input events.

Pure: no Kafka, no clock unless asked. Every random choice comes from one
``random.Random(seed)``, so a seed always yields the same events (ids included) for the
same ``now_ms`` values — the demo is reproducible and tests can pin exact outputs.

The model follows the retailer of DESIGN.md: anonymous visitors browse category and
product pages biased towards their interests (so interest segments actually fire), fill
carts and order from them, now and then see the newsletter pop-up and sign up, walk
through a welcome flow that asks more about them, log in (linking device, account and
email), and read, click, or — rarely — bounce, unsubscribe or complain about the mails
their subscription brings.

Each call to :meth:`ShopperSimulation.next_events` performs one *action*, drawn from a
weighted ``mix``; an action yields one to a few events. Per-step work is a handful of
random draws and small dicts, because the benchmark uses this generator to produce tens of
thousands of events per second.
"""

from __future__ import annotations

import time
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from random import Random
from typing import Any

from streams.events import Event, EventKind, Identity

CATEGORIES: tuple[str, ...] = ("toys", "baking", "gifts", "garden", "kitchen")
SITE = "https://shop.example.com"
SITE_NAME = "Home & Co"
CURRENCY = "EUR"

# What each action emits; a mix may name an action or a whole kind (see _expand_mix).
ACTIONS: dict[str, EventKind] = {
    "page_view": EventKind.PAGE_VIEW,
    "add_to_cart": EventKind.PAGE_VIEW,
    "popup": EventKind.PAGE_VIEW,  # popup_shown, sometimes followed by a sign-up identify
    "signup": EventKind.IDENTIFY,
    "login": EventKind.IDENTIFY,
    "profile_update": EventKind.IDENTIFY,  # a welcome-flow answer
    "order": EventKind.ORDER,
    "order_change": EventKind.ORDER,  # a cancellation or refund of an earlier order
    "email": EventKind.EMAIL,  # one delivery and what the reader did with it (1-3 events)
}

# Roughly a shop's day: mostly browsing, a steady trickle of mail engagement, few orders.
DEFAULT_MIX: dict[str, float] = {
    "page_view": 60.0,
    "add_to_cart": 8.0,
    "popup": 3.0,
    "signup": 2.0,
    "login": 3.0,
    "profile_update": 2.0,
    "order": 4.0,
    "order_change": 0.5,
    "email": 17.5,
}

_PRODUCTS_PER_CATEGORY = 20
_NOUNS: dict[str, tuple[str, ...]] = {
    "toys": ("wooden train", "doll's pram", "stacking blocks", "puzzle", "plush bear", "kite"),
    "baking": (
        "cake tin",
        "piping set",
        "rolling pin",
        "mixing bowl",
        "cookie cutters",
        "proofing basket",
    ),
    "gifts": ("scented candle", "photo frame", "gift box", "tea sampler", "notebook", "vase"),
    "garden": (
        "watering can",
        "pruning shears",
        "bird feeder",
        "plant pot",
        "garden gloves",
        "seed kit",
    ),
    "kitchen": (
        "chef's knife",
        "cutting board",
        "french press",
        "spice rack",
        "cast-iron pan",
        "salad bowl",
    ),
}
_ADJECTIVES = ("classic", "mini", "deluxe", "linen", "oak", "enamel", "nordic", "vintage")
_PRICE_RANGE: dict[str, tuple[int, int]] = {
    "toys": (9, 79),
    "baking": (4, 49),
    "gifts": (5, 39),
    "garden": (3, 59),
    "kitchen": (6, 129),
}
_FIRST_NAMES = (
    "Anna",
    "Bram",
    "Chloe",
    "Daan",
    "Emma",
    "Finn",
    "Greta",
    "Hugo",
    "Iris",
    "Jonas",
    "Lotte",
    "Milan",
    "Nina",
    "Oscar",
    "Pia",
    "Ruben",
    "Sara",
    "Tim",
    "Vera",
    "Yara",
)
_LAST_NAMES = (
    "de Vries",
    "Jansen",
    "Smith",
    "Muller",
    "Bakker",
    "Visser",
    "Brown",
    "Schmidt",
    "Peters",
    "Mulder",
    "Wilson",
    "Becker",
)
_LANGUAGES = ("nl", "nl", "nl", "en", "en", "de")  # weighted by repetition: a Dutch shop
_CAMPAIGNS = (
    "cmp-2024-47-inspiration",
    "cmp-2024-48-baking-season",
    "cmp-2024-49-gift-guide",
    "cmp-2024-50-garden-winter",
    "cmp-welcome-1",
    "cmp-welcome-2",
)
_REFERRERS = (
    None,
    None,
    None,
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.instagram.com/",
    "https://www.pinterest.com/",
)

# Session behaviour: a few dozen shoppers are "on the site" at once, so one visitor's page
# views cluster the way they do in a real session instead of being spread over everyone.
_MAX_ACTIVE_SESSIONS = 48
_NEW_SESSION_PROBABILITY = 0.12
_INTEREST_BIAS = 0.75  # share of views/clicks that go to one of the shopper's interests
_TWO_DEVICES = 0.3
_MAX_CART = 6
_ORDER_FROM_CART = 0.85  # "mostly by people who added to cart"; the rest buy directly
_MAX_OPEN_ORDERS = 20_000  # bounds memory in long benchmark runs
_SIM_STEP_MS = 50  # simulated time between actions when no clock is given


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    category: str
    title: str
    price: float

    @property
    def path(self) -> str:
        return f"/p/{self.product_id}"


@dataclass(slots=True)
class _Shopper:
    devices: tuple[str, ...]  # one anonymous_id per device
    user_id: str
    email: str
    first_name: str
    last_name: str
    language: str
    birthday: str
    interests: tuple[str, ...]
    subscribed: bool = False
    has_account: bool = False
    logged_in: int = 0  # bit i set: device i is logged in, so its events carry the user_id
    welcome_step: int = 0
    cart: list[Product] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _PlacedOrder:
    shopper: int
    device: int
    order_id: str
    total: float
    items: list[dict[str, Any]]


# Welcome flow: each answer adds traits to the profile the sign-up created.
_WELCOME_STEPS = 3


def _expand_mix(mix: Mapping[str, float]) -> dict[str, float]:
    """Action weights from a mix naming actions and/or event kinds.

    A kind (``"page-view"``, ``"order"``, ...) spreads its weight over that kind's actions
    in their default proportions, so a benchmark can ask for "80% page views" without
    knowing the actions.
    """
    kinds = {kind.value: kind for kind in EventKind}
    weights: dict[str, float] = dict.fromkeys(ACTIONS, 0.0)
    for name, weight in mix.items():
        if weight < 0:
            raise ValueError(f"mix weight for {name!r} is negative: {weight}")
        if name in ACTIONS:
            weights[name] += weight
        elif name in kinds:
            members = [a for a, k in ACTIONS.items() if k is kinds[name]]
            share = sum(DEFAULT_MIX[a] for a in members)
            for action in members:
                weights[action] += weight * DEFAULT_MIX[action] / share
        else:
            known = ", ".join([*ACTIONS, *kinds])
            raise ValueError(f"unknown mix entry {name!r}; expected one of {known}")
    if sum(weights.values()) <= 0:
        raise ValueError("mix weights must not all be zero")
    return {action: weight for action, weight in weights.items() if weight > 0}


def parse_mix(text: str) -> dict[str, float]:
    """A mix written as ``name=weight`` pairs, comma-separated (``page-view=80,order=20``).

    Names are actions or event kinds, as :class:`ShopperSimulation` takes them; weights are
    relative. Raises ValueError naming what is wrong.
    """
    mix: dict[str, float] = {}
    for item in text.split(","):
        name, equals, weight = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"mix entry {item.strip()!r} is not name=weight")
        if name in mix:
            raise ValueError(f"mix names {name!r} twice")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise ValueError(
                f"mix weight for {name!r} is not a number: {weight.strip()!r}"
            ) from None
    _expand_mix(mix)
    return mix


def _build_catalogue(rng: Random) -> tuple[Product, ...]:
    products = []
    for category in CATEGORIES:
        low, high = _PRICE_RANGE[category]
        for number in sorted(rng.sample(range(1, 200), _PRODUCTS_PER_CATEGORY)):
            title = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS[category])}".capitalize()
            # Shop prices end in .95 or .50; rounding keeps float sums exact enough to compare.
            price = round(rng.randint(low, high) + rng.choice((0.95, 0.5)), 2)
            products.append(Product(f"p-{category}-{number:03d}", category, title, price))
    return tuple(products)


class ShopperSimulation:
    """A population of seeded shoppers; each step is one action of one of them.

    ``mix`` weights the actions (keys of :data:`ACTIONS`) or whole event kinds
    (``"page-view"``, ``"order"``, ``"email"``, ``"identify"``); default :data:`DEFAULT_MIX`.
    An action that has nobody to act on yet (mail before anyone subscribed, a refund before
    any order) performs its prerequisite instead (a sign-up, an order), so the stream is
    always consistent; over thousands of steps the mix converges to the weights.
    ``action_counts`` counts the actions performed.

    Event ids derive from the seed too: two runs with one seed against the same topics
    produce the same ids, which the workers drop as replays — vary the seed for fresh data.
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        shoppers: int = 1000,
        start_ms: int | None = None,
        mix: Mapping[str, float] | None = None,
    ) -> None:
        if shoppers < 1:
            raise ValueError("shoppers must be at least 1")
        self._rng = Random(seed)
        self._size = shoppers
        self._clock = time.time_ns() // 1_000_000 if start_ms is None else start_ms
        weights = _expand_mix(DEFAULT_MIX if mix is None else mix)
        self._actions = list(weights)
        # Pop-ups convert only when the mix wants sign-ups, so e.g. a page-view-only
        # benchmark mix really yields page views only.
        self._popups_convert = weights.get("signup", 0.0) > 0
        self._cumulative = list(accumulate(weights.values()))
        self._handlers: dict[str, Callable[[int], list[Event]]] = {
            "page_view": self._page_view,
            "add_to_cart": self._add_to_cart,
            "popup": self._popup,
            "signup": self._signup,
            "login": self._login,
            "profile_update": self._profile_update,
            "order": self._order,
            "order_change": self._order_change,
            "email": self._email,
        }
        self.catalogue: tuple[Product, ...] = _build_catalogue(self._rng)
        self._by_category: dict[str, tuple[Product, ...]] = {
            c: tuple(p for p in self.catalogue if p.category == c) for c in CATEGORIES
        }
        # Shoppers are created on first use so a million-shopper benchmark starts instantly.
        self._shoppers: dict[int, _Shopper] = {}
        self._active: list[tuple[int, int]] = []  # (shopper, device) with an open session
        # Pools of who can take part in an action; unordered, removal by swap-with-last.
        self._carts: list[int] = []
        self._subscribers: list[int] = []
        self._welcome: list[int] = []
        self._orders: list[_PlacedOrder] = []
        self._order_seq = 0
        self.action_counts: Counter[str] = Counter()

    # -- public API

    def next_events(self, now_ms: int) -> list[Event]:
        """Perform one action of one shopper; its 1..n events, none later than ``now_ms``."""
        position = bisect_right(self._cumulative, self._rng.random() * self._cumulative[-1])
        action = self._actions[min(position, len(self._actions) - 1)]
        return self._handlers[action](now_ms)

    def stream(self, count: int, now_ms: Callable[[], int] | None = None) -> Iterator[Event]:
        """``count`` events; timestamps from ``now_ms()`` or from a simulated clock.

        The simulated clock starts at ``start_ms`` and advances a fixed step per action, so
        with a fixed ``start_ms`` the whole stream is reproducible.
        """
        produced = 0
        while produced < count:
            if now_ms is None:
                self._clock += _SIM_STEP_MS
                now = self._clock
            else:
                now = now_ms()
            for event in self.next_events(now):
                if produced == count:
                    return
                yield event
                produced += 1

    def subscriber_emails(self, limit: int = 3) -> list[str]:
        """Emails of current subscribers (e.g. for the demo's example lookup URLs)."""
        return [self._shoppers[i].email for i in self._subscribers[:limit]]

    # -- helpers

    def _id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _shopper(self, index: int) -> _Shopper:
        shopper = self._shoppers.get(index)
        if shopper is None:
            rng = self._rng
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            devices = 2 if rng.random() < _TWO_DEVICES else 1
            shopper = _Shopper(
                devices=tuple(self._id() for _ in range(devices)),
                user_id=f"u-{index:06d}",
                # The index keeps emails unique; lowercase, as the codec normalises them.
                email=f"{first}.{last.replace(' ', '')}{index}@example.com".lower(),
                first_name=first,
                last_name=last,
                language=rng.choice(_LANGUAGES),
                birthday=f"{rng.randint(1950, 2005)}-{rng.randint(1, 12):02d}-"
                f"{rng.randint(1, 28):02d}",
                interests=tuple(rng.sample(CATEGORIES, 2 if rng.random() < 0.4 else 1)),
            )
            self._shoppers[index] = shopper
        return shopper

    def _session(self) -> tuple[int, _Shopper, int]:
        """A shopper (and the device) currently on the site, sometimes a newly arriving one."""
        rng = self._rng
        active = self._active
        if len(active) < min(_MAX_ACTIVE_SESSIONS, self._size) or (
            rng.random() < _NEW_SESSION_PROBABILITY
        ):
            index = rng.randrange(self._size)
            shopper = self._shopper(index)
            session = (index, rng.randrange(len(shopper.devices)))
            if len(active) < _MAX_ACTIVE_SESSIONS:
                active.append(session)
            else:
                active[rng.randrange(len(active))] = session
        else:
            session = active[rng.randrange(len(active))]
        return session[0], self._shoppers[session[0]], session[1]

    def _unsubscribed_visitor(self) -> tuple[int, _Shopper, int]:
        """A visitor the site does not know as a subscriber (who may see the pop-up)."""
        for _ in range(4):
            index, shopper, device = self._session()
            if not shopper.subscribed:
                return index, shopper, device
        # Everyone on the site subscribed already: a new visitor arrives.
        while True:
            index = self._rng.randrange(self._size)
            shopper = self._shopper(index)
            if not shopper.subscribed or len(self._subscribers) >= self._size:
                return index, shopper, self._rng.randrange(len(shopper.devices))

    def _category(self, shopper: _Shopper) -> str:
        rng = self._rng
        if rng.random() < _INTEREST_BIAS:
            interests = shopper.interests
            return interests[0] if len(interests) == 1 else rng.choice(interests)
        return rng.choice(CATEGORIES)

    def _product(self, shopper: _Shopper) -> Product:
        return self._rng.choice(self._by_category[self._category(shopper)])

    def _web_identity(self, shopper: _Shopper, device: int) -> Identity:
        if shopper.logged_in >> device & 1:
            return Identity(anonymous_id=shopper.devices[device], user_id=shopper.user_id)
        return Identity(anonymous_id=shopper.devices[device])

    def _page(
        self,
        now: int,
        identity: Identity,
        path: str,
        title: str,
        category: str | None,
        product_id: str | None,
        action: str,
        referrer: str | None = None,
    ) -> Event:
        body = {
            "url": SITE + path,
            "path": path,
            "title": title,
            "referrer": referrer,
            "category": category,
            "product_id": product_id,
            "action": action,
        }
        return Event(EventKind.PAGE_VIEW, self._id(), now, identity, body)

    def _identify(
        self,
        now: int,
        identity: Identity,
        traits: dict[str, str] | None,
        newsletter: str | None = None,
        consent: dict[str, bool] | None = None,
    ) -> Event:
        body = {"traits": traits, "newsletter": newsletter, "consent": consent}
        return Event(EventKind.IDENTIFY, self._id(), now, identity, body)

    def _email_event(
        self,
        now: int,
        email: str,
        campaign: str,
        message: str,
        action: str,
        url: str | None = None,
        category: str | None = None,
    ) -> Event:
        body = {
            "campaign_id": campaign,
            "message_id": message,
            "action": action,
            "url": url,
            "category": category,
        }
        return Event(EventKind.EMAIL, self._id(), now, Identity(email=email), body)

    def _order_identity(self, shopper: _Shopper, device: int) -> Identity:
        # Account holders check out logged in; others as guests, giving only their email.
        anonymous_id = shopper.devices[device]
        if shopper.has_account:
            return Identity(anonymous_id, shopper.user_id, shopper.email)
        return Identity(anonymous_id=anonymous_id, email=shopper.email)

    # -- actions (each returns the events of one step)

    def _page_view(self, now: int) -> list[Event]:
        self.action_counts["page_view"] += 1
        _, shopper, device = self._session()
        rng = self._rng
        identity = self._web_identity(shopper, device)
        referrer = rng.choice(_REFERRERS)
        r = rng.random()
        if r < 0.08:
            return [
                self._page(
                    now, identity, "/", f"{SITE_NAME} — home goods", None, None, "view", referrer
                )
            ]
        if r < 0.4:
            category = self._category(shopper)
            return [
                self._page(
                    now,
                    identity,
                    f"/c/{category}",
                    f"{category.capitalize()} | {SITE_NAME}",
                    category,
                    None,
                    "view",
                    referrer,
                )
            ]
        product = self._product(shopper)
        return [
            self._page(
                now,
                identity,
                product.path,
                f"{product.title} | {SITE_NAME}",
                product.category,
                product.product_id,
                "view",
                referrer or f"{SITE}/c/{product.category}",
            )
        ]

    def _add_to_cart(self, now: int) -> list[Event]:
        self.action_counts["add_to_cart"] += 1
        index, shopper, device = self._session()
        product = self._product(shopper)
        if not shopper.cart:
            self._carts.append(index)
        if len(shopper.cart) < _MAX_CART:
            shopper.cart.append(product)
        return [
            self._page(
                now,
                self._web_identity(shopper, device),
                product.path,
                f"{product.title} | {SITE_NAME}",
                product.category,
                product.product_id,
                "add_to_cart",
            )
        ]

    def _popup(self, now: int) -> list[Event]:
        self.action_counts["popup"] += 1
        rng = self._rng
        index, shopper, device = self._unsubscribed_visitor()
        category = self._category(shopper)
        # A quarter of the pop-ups convert: the sign-up follows seconds after it was shown.
        converts = self._popups_convert and not shopper.subscribed and rng.random() < 0.25
        shown_at = now - rng.randint(3_000, 30_000) if converts else now
        popup = self._page(
            shown_at,
            self._web_identity(shopper, device),
            f"/c/{category}",
            f"{category.capitalize()} | {SITE_NAME}",
            category,
            None,
            "popup_shown",
        )
        if not converts:
            return [popup]
        return [popup, self._subscribe(now, index, shopper, device)]

    def _signup(self, now: int) -> list[Event]:
        self.action_counts["signup"] += 1
        index, shopper, device = self._unsubscribed_visitor()
        if shopper.subscribed:  # everyone subscribed already; a login is the closest thing
            return self._login_of(now, shopper, device)
        return [self._subscribe(now, index, shopper, device)]

    def _subscribe(self, now: int, index: int, shopper: _Shopper, device: int) -> Event:
        rng = self._rng
        traits = {"language": shopper.language, "interests": ",".join(shopper.interests)}
        if rng.random() < 0.5:
            traits["first_name"] = shopper.first_name
        shopper.subscribed = True
        self._subscribers.append(index)
        if shopper.welcome_step < _WELCOME_STEPS:
            self._welcome.append(index)
        return self._identify(
            now,
            Identity(anonymous_id=shopper.devices[device], email=shopper.email),
            traits,
            "subscribed",
            {"email_marketing": True, "personalization": rng.random() < 0.7},
        )

    def _login(self, now: int) -> list[Event]:
        self.action_counts["login"] += 1
        _, shopper, device = self._session()
        return self._login_of(now, shopper, device)

    def _login_of(self, now: int, shopper: _Shopper, device: int) -> list[Event]:
        # The first login creates the account, whose form asked the first name.
        traits = None if shopper.has_account else {"first_name": shopper.first_name}
        shopper.has_account = True
        shopper.logged_in |= 1 << device
        identity = Identity(shopper.devices[device], shopper.user_id, shopper.email)
        return [self._identify(now, identity, traits)]

    def _profile_update(self, now: int) -> list[Event]:
        pool = self._welcome
        while pool:
            position = self._rng.randrange(len(pool))
            shopper = self._shoppers[pool[position]]
            if not shopper.subscribed or shopper.welcome_step >= _WELCOME_STEPS:
                # Left the list (or finished) since joining the flow: no more questions.
                pool[position] = pool[-1]
                pool.pop()
                continue
            self.action_counts["profile_update"] += 1
            step = shopper.welcome_step
            shopper.welcome_step += 1
            if shopper.welcome_step >= _WELCOME_STEPS:
                pool[position] = pool[-1]
                pool.pop()
            traits: dict[str, str]
            if step == 0:
                traits = {"first_name": shopper.first_name, "last_name": shopper.last_name}
            elif step == 1:
                traits = {"language": shopper.language, "interests": ",".join(shopper.interests)}
            else:
                traits = {"birthday": shopper.birthday}
            # Answered through a link in the welcome mail: known by email only.
            return [self._identify(now, Identity(email=shopper.email), traits)]
        return self._signup(now)

    def _order(self, now: int) -> list[Event]:
        self.action_counts["order"] += 1
        rng = self._rng
        if self._carts and rng.random() < _ORDER_FROM_CART:
            position = rng.randrange(len(self._carts))
            index = self._carts[position]
            self._carts[position] = self._carts[-1]
            self._carts.pop()
            shopper = self._shoppers[index]
            device = rng.randrange(len(shopper.devices))
            basket = shopper.cart[:3]
            shopper.cart.clear()
        else:
            index, shopper, device = self._session()
            basket = [self._product(shopper) for _ in range(rng.randint(1, 3))]
        quantities: dict[Product, int] = {}
        for product in basket:
            quantities[product] = quantities.get(product, 0) + 1
        items: list[dict[str, Any]] = []
        total = 0.0
        for product, quantity in quantities.items():
            if rng.random() < 0.15:
                quantity += 1
            items.append(
                {
                    "product_id": product.product_id,
                    "category": product.category,
                    "quantity": quantity,
                    "unit_price": product.price,
                    "starts_at": None,
                    "ends_at": None,
                }
            )
            total += quantity * product.price
        # Rounded to cents, as a shop reports it; equals the item sum up to float noise.
        total = round(total, 2)
        self._order_seq += 1
        order = _PlacedOrder(index, device, f"o-{self._order_seq:08d}", total, items)
        if len(self._orders) < _MAX_OPEN_ORDERS:
            self._orders.append(order)
        else:
            self._orders[rng.randrange(_MAX_OPEN_ORDERS)] = order
        return [self._order_event(now, order, "placed")]

    def _order_event(self, now: int, order: _PlacedOrder, status: str) -> Event:
        body = {
            "order_id": order.order_id,
            "status": status,
            "total": order.total,
            "currency": CURRENCY,
            "items": order.items,
        }
        identity = self._order_identity(self._shoppers[order.shopper], order.device)
        return Event(EventKind.ORDER, self._id(), now, identity, body)

    def _order_change(self, now: int) -> list[Event]:
        if not self._orders:
            return self._order(now)
        self.action_counts["order_change"] += 1
        rng = self._rng
        position = rng.randrange(len(self._orders))
        order = self._orders[position]
        self._orders[position] = self._orders[-1]
        self._orders.pop()
        status = "cancelled" if rng.random() < 0.6 else "refunded"
        return [self._order_event(now, order, status)]

    def _email(self, now: int) -> list[Event]:
        if not self._subscribers:
            return self._signup(now)
        self.action_counts["email"] += 1
        rng = self._rng
        pool = self._subscribers
        position = rng.randrange(len(pool))
        shopper = self._shoppers[pool[position]]
        email = shopper.email
        campaign = rng.choice(_CAMPAIGNS)
        message = self._id()
        # Backdated so that delivery, open and click keep their order and none is in the
        # future: the last thing the reader did happens "now".
        opened_at = now - rng.randint(1_000, 600_000)
        delivered_at = opened_at - rng.randint(60_000, 3_600_000)
        r = rng.random()
        if r < 0.01:
            self._leave_list(position, shopper)
            return [self._email_event(now, email, campaign, message, "bounced")]
        if r < 0.55:
            return [self._email_event(now, email, campaign, message, "delivered")]
        events = [self._email_event(delivered_at, email, campaign, message, "delivered")]
        r = rng.random()
        if r < 0.4:
            category = self._category(shopper)
            url = f"{SITE}/c/{category}?utm_source=newsletter&utm_campaign={campaign}"
            events.append(self._email_event(opened_at, email, campaign, message, "opened"))
            events.append(
                self._email_event(now, email, campaign, message, "clicked", url, category)
            )
        elif r < 0.42:
            self._leave_list(position, shopper)
            events.append(self._email_event(opened_at, email, campaign, message, "opened"))
            events.append(self._email_event(now, email, campaign, message, "unsubscribed"))
            # The preference centre records the opt-out on the profile as well.
            events.append(self._identify(now, Identity(email=email), None, "unsubscribed"))
        elif r < 0.423:
            self._leave_list(position, shopper)
            events.append(self._email_event(now, email, campaign, message, "complained"))
        else:
            events.append(self._email_event(now, email, campaign, message, "opened"))
        return events

    def _leave_list(self, position: int, shopper: _Shopper) -> None:
        """Stop mailing someone (bounce, unsubscribe, complaint); they may sign up again."""
        shopper.subscribed = False
        pool = self._subscribers
        pool[position] = pool[-1]
        pool.pop()
