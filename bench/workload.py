"""A deterministic, Segment-shaped workload: people who browse anonymously, sign up, buy,
open emails, shop in store, share on social, call support, and show up in the CRM.

Same seed, same arguments → byte-identical batches. Identifiers overlap across channels the
way they do in real life (a newsletter email before the sign-up, a loyalty card and a phone
at the till, a CRM contact that ties email and phone together, a few shared family phones and
mistyped CRM emails), so identity resolution has merges to do once merges land.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

_FIRST = ("ada", "bruno", "chiara", "dario", "elena", "giulia", "luca", "marta", "sara")
_LAST = ("rossi", "bianchi", "romano", "colombo", "ricci", "greco", "conti", "rizzo")
_DOMAINS = ("example.com", "mail.example.org", "posta.example.it", "inbox.example.net")
_CATEGORIES = ("shoes", "jackets", "bags", "accessories", "kids", "outdoor", "home")
_BRANDS = ("Alpina", "Brezza", "Corsa", "Dolomiti", "Estate", "Faro")
_PAGES = ("/", "/new-in", "/sale", "/stores", "/help/shipping", "/account", "/cart")
_QUERIES = ("waterproof jacket", "running shoes", "leather bag", "wool scarf", "kids boots")
_REFERRERS = ("https://www.google.com/", "", "https://shop.example.com/", "https://instagram.com/")
_STORES = ("MI-01", "MI-02", "RM-01", "TO-01", "FI-01", "NA-01")
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
)
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_LIBRARY = {"name": "analytics.js", "version": "next-1.70.0"}


@dataclass(slots=True)
class Person:
    """One real human. Their identifiers are fixed; what the systems know grows over time."""

    index: int
    devices: tuple[str, ...]
    user_id: str | None
    email: str
    phone: str | None
    crm_id: str | None
    crm_email: str
    loyalty_card: str | None
    handle: str | None
    signed_up: bool = False
    orders: int = 0
    weight: float = 1.0
    cart: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Workload:
    """``items`` in send order (interleaved across people, timestamps increasing)."""

    items: list[dict[str, Any]]
    people: int

    def batches(self, size: int) -> list[list[dict[str, Any]]]:
        return [self.items[i : i + size] for i in range(0, len(self.items), size)]

    def batch_bodies(self, size: int, **call_fields: Any) -> list[bytes]:
        """``/v1/batch`` bodies of ``size`` calls, each call with ``call_fields`` added."""
        return [
            orjson.dumps({"batch": [{**c, **call_fields} for c in b] if call_fields else b})
            for b in self.batches(size)
        ]

    def mean_event_bytes(self) -> float:
        sample = self.items[:: max(1, len(self.items) // 2000)]
        return sum(len(orjson.dumps(i)) for i in sample) / max(1, len(sample))

    def type_mix(self) -> dict[str, int]:
        mix: dict[str, int] = {}
        for item in self.items:
            channel = item.get("context", {}).get("channel", "web")
            mix[channel] = mix.get(channel, 0) + 1
        return dict(sorted(mix.items(), key=lambda kv: -kv[1]))


def generate(
    events: int,
    customers: int,
    *,
    seed: int = 42,
    prefix: str = "bench",
    start: datetime | None = None,
    span: timedelta = timedelta(days=30),
) -> Workload:
    """``events`` Segment batch items spread over ``customers`` people, deterministic in
    ``seed`` (and ``start``). ``prefix`` keeps message ids of separate phases apart;
    timestamps run from ``start`` (default 2025-01-01 UTC) over ``span``."""
    rng = random.Random(seed)
    people = [_person(rng, i, seed) for i in range(customers)]
    _share_some_identifiers(rng, people)
    weights = [p.weight for p in people]
    origin = start or _EPOCH
    step = span / max(1, events)
    gen = _Generator(rng, prefix)
    picks = rng.choices(people, weights=weights, k=events)
    items = []
    for i, person in enumerate(picks):
        # Somewhere in the item's own slot: one person's events stay in order, as they are
        # in real traffic, even when the span is short (a jitter wider than the slot made
        # half of a returning person's events late, each forcing a journey replay).
        at = origin + step * (i + rng.random())
        items.append(gen.event(person, i, at))
    return Workload(items, customers)


def single_events(workload: Workload, count: int, tag: str = "single") -> list[dict[str, Any]]:
    """``count`` items suitable for ``/v1/track`` (track calls), with their own message ids
    (``tag`` keeps the ids of separate phases apart)."""
    tracks = [i for i in workload.items if i["type"] == "track"]
    out = []
    for n in range(count):
        item = dict(tracks[n % len(tracks)])
        item["messageId"] = f"{item['messageId']}-{tag}-{n}"
        item.pop("type")
        out.append(item)
    return out


def _person(rng: random.Random, i: int, seed: int) -> Person:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    email = f"{first}.{last}{i}@{rng.choice(_DOMAINS)}"
    devices = tuple(_hex(rng, 32) for _ in range(rng.choice((1, 1, 1, 2, 2, 3))))
    has_crm = rng.random() < 0.55
    return Person(
        index=i,
        devices=devices,
        user_id=f"u{seed:x}-{i}" if rng.random() < 0.7 else None,
        # Mixed spellings: normalisation must make them equal.
        email=email if rng.random() < 0.8 else f"  {email.title()} ",
        phone=f"+39 3{rng.randrange(10, 99)} {rng.randrange(1_000_000, 9_999_999)}"
        if rng.random() < 0.6
        else None,
        crm_id=f"CRM-{seed:x}-{i:07d}" if has_crm else None,
        crm_email=email,
        loyalty_card=f"LC{rng.randrange(10**9, 10**10)}" if rng.random() < 0.35 else None,
        handle=f"@{first}_{last}_{i}" if rng.random() < 0.25 else None,
        weight=min(50.0, rng.paretovariate(1.6)),
    )


def _share_some_identifiers(rng: random.Random, people: Sequence[Person]) -> None:
    """Households share a landline; CRMs hold typos and family emails. These are the
    identifiers that would wrongly fuse two people without merge protection."""
    for person in people:
        other = people[rng.randrange(len(people))]
        if other is person:
            continue
        roll = rng.random()
        if roll < 0.03 and other.phone:
            person.phone = other.phone
        elif roll < 0.05:
            person.crm_email = other.email


class _Generator:
    def __init__(self, rng: random.Random, prefix: str) -> None:
        self.rng = rng
        self.prefix = prefix

    def event(self, p: Person, i: int, at: datetime) -> dict[str, Any]:
        r = self.rng.random()
        if not p.signed_up:
            if r < 0.36:
                item = self._page(p)
            elif r < 0.56:
                item = self._product_viewed(p)
            elif r < 0.66:
                item = self._searched(p)
            elif r < 0.72:
                item = self._ad_clicked(p)
            elif r < 0.78:
                item = self._email(p, "Email Opened")
            elif r < 0.81:
                item = self._social(p)
            elif r < 0.84:
                item = self._in_store(p)
            elif r < 0.88:
                item = self._crm(p)
            elif p.user_id:
                item = self._sign_up(p)
            else:
                item = self._product_viewed(p)
        elif r < 0.16:
            item = self._page(p)
        elif r < 0.32:
            item = self._product_viewed(p)
        elif r < 0.38:
            item = self._searched(p)
        elif r < 0.45:
            item = self._added(p)
        elif r < 0.53:
            item = self._order(p)
        elif r < 0.61:
            item = self._email(p, "Email Opened")
        elif r < 0.66:
            item = self._email(p, "Email Link Clicked")
        elif r < 0.72:
            item = self._in_store(p)
        elif r < 0.76:
            item = self._social(p)
        elif r < 0.81:
            item = self._crm(p)
        elif r < 0.85:
            item = self._login(p)
        elif r < 0.93:
            item = self._screen(p)
        elif r < 0.96:
            item = self._support(p)
        else:
            item = self._review(p)
        item["messageId"] = f"{self.prefix}-{i:09d}"
        item["timestamp"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return item

    # -- identities ---------------------------------------------------------------------

    def _web_ids(self, p: Person) -> dict[str, Any]:
        ids: dict[str, Any] = {"anonymousId": self.rng.choice(p.devices)}
        if p.signed_up and p.user_id:
            ids["userId"] = p.user_id
        return ids

    def _context(self, p: Person, path: str, **extra: Any) -> dict[str, Any]:
        context: dict[str, Any] = {
            "library": _LIBRARY,
            "userAgent": _AGENTS[p.index % len(_AGENTS)],
            "ip": f"10.{p.index % 250}.{p.index // 250 % 250}.{self.rng.randrange(1, 250)}",
            "page": {
                "path": path,
                "referrer": self.rng.choice(_REFERRERS),
                "title": f"Negozio — {path.strip('/') or 'home'}",
            },
        }
        context.update(extra)
        return context

    def _product(self) -> dict[str, Any]:
        n = self.rng.randrange(1, 5000)
        price = round(self.rng.uniform(9, 400), 2)
        return {
            "product_id": f"P-{n:05d}",
            "sku": f"SKU-{n:05d}-{self.rng.choice('SMLX')}",
            "category": self.rng.choice(_CATEGORIES),
            "name": f"{self.rng.choice(_BRANDS)} item {n}",
            "brand": self.rng.choice(_BRANDS),
            "price": price,
            "currency": "EUR",
        }

    # -- anonymous and web --------------------------------------------------------------

    def _page(self, p: Person) -> dict[str, Any]:
        path = self.rng.choice(_PAGES)
        return {
            "type": "page",
            **self._web_ids(p),
            "name": path.strip("/").split("/")[0] or "Home",
            "properties": {"path": path, "url": f"https://shop.example.com{path}"},
            "context": self._context(p, path),
        }

    def _product_viewed(self, p: Person) -> dict[str, Any]:
        product = self._product()
        path = f"/p/{product['product_id'].lower()}"
        return {
            "type": "track",
            **self._web_ids(p),
            "event": "Product Viewed",
            "properties": {
                **product,
                "url": f"https://shop.example.com{path}",
                "image_url": f"https://cdn.example.com/{product['sku']}.jpg",
            },
            "context": self._context(p, path),
        }

    def _searched(self, p: Person) -> dict[str, Any]:
        query = self.rng.choice(_QUERIES)
        return {
            "type": "track",
            **self._web_ids(p),
            "event": "Products Searched",
            "properties": {"query": query, "results": self.rng.randrange(0, 120)},
            "context": self._context(p, "/search"),
        }

    def _ad_clicked(self, p: Person) -> dict[str, Any]:
        campaign = {
            "name": f"spring-{self.rng.randrange(1, 9)}",
            "source": self.rng.choice(("google", "meta", "tiktok")),
            "medium": "cpc",
            "content": "carousel",
        }
        return {
            "type": "track",
            **self._web_ids(p),
            "event": "Ad Clicked",
            "properties": {"ad_id": f"ad-{self.rng.randrange(1, 400)}", "cost": 0.42},
            "context": self._context(p, "/landing", channel="ads", campaign=campaign),
        }

    def _added(self, p: Person) -> dict[str, Any]:
        product = {**self._product(), "quantity": self.rng.randrange(1, 3)}
        p.cart.append(product)
        return {
            "type": "track",
            **self._web_ids(p),
            "event": "Product Added",
            "properties": {**product, "cart_id": f"c-{p.index}-{p.orders}"},
            "context": self._context(p, "/cart"),
        }

    def _order(self, p: Person) -> dict[str, Any]:
        products = p.cart or [
            {**self._product(), "quantity": 1} for _ in range(self.rng.randrange(1, 4))
        ]
        p.cart = []
        p.orders += 1
        total = round(sum(x["price"] * x["quantity"] for x in products), 2)
        return {
            "type": "track",
            **self._web_ids(p),
            "event": "Order Completed",
            "properties": {
                "order_id": f"o-{p.index}-{p.orders}",
                "total": total,
                "revenue": round(total / 1.22, 2),
                "tax": round(total - total / 1.22, 2),
                "shipping": 4.9,
                "currency": "EUR",
                "products": products[:4],
                "repeat": p.orders > 1,
            },
            "context": self._context(p, "/checkout/thank-you"),
        }

    def _sign_up(self, p: Person) -> dict[str, Any]:
        p.signed_up = True
        traits = {
            "email": p.email,
            "firstName": p.email.strip().split(".")[0].title(),
            "newsletter": self.rng.random() < 0.6,
            "createdAt": "2024-05-01T10:00:00Z",
        }
        if p.phone:
            traits["phone"] = p.phone
        return {
            "type": "identify",
            "anonymousId": self.rng.choice(p.devices),
            "userId": p.user_id,
            "traits": traits,
            "context": self._context(p, "/account/sign-up"),
        }

    def _login(self, p: Person) -> dict[str, Any]:
        return {
            "type": "identify",
            "anonymousId": self.rng.choice(p.devices),
            "userId": p.user_id,
            "traits": {"email": p.email, "lastLogin": "web"},
            "context": self._context(p, "/account/login"),
        }

    def _screen(self, p: Person) -> dict[str, Any]:
        return {
            "type": "screen",
            "anonymousId": p.devices[-1],
            "userId": p.user_id,
            "name": self.rng.choice(("Home", "Product", "Wishlist", "Orders")),
            "properties": {"app_version": "5.12.1", "build": 5121},
            "context": {
                "library": {"name": "analytics-ios", "version": "1.5.2"},
                "channel": "mobile",
                "device": {"model": "iPhone15,2", "type": "ios"},
                "os": {"name": "iOS", "version": "17.5"},
                "locale": "it-IT",
                "app": {"name": "Negozio", "version": "5.12.1"},
            },
        }

    # -- other channels -------------------------------------------------------------

    def _email(self, p: Person, event: str) -> dict[str, Any]:
        # An email tool knows the address; before the sign-up it has no userId.
        known = p.signed_up and p.user_id
        ids: dict[str, Any] = {"userId": p.user_id} if known else {"anonymousId": f"esp-{p.index}"}
        properties: dict[str, Any] = {
            "campaign_id": f"cmp-{self.rng.randrange(1, 60)}",
            "campaign_name": "Weekly picks",
            "email_id": f"em-{self.rng.getrandbits(40):x}",
            "email_subject": "Nuovi arrivi per te",
            "list": "newsletter",
        }
        if event == "Email Link Clicked":
            properties["link_url"] = "https://shop.example.com/new-in?utm_source=email"
        return {
            "type": "track",
            **ids,
            "event": event,
            "properties": properties,
            "context": {
                "channel": "email",
                "traits": {"email": p.email},
                "library": {"name": "esp-webhooks", "version": "2.3"},
            },
        }

    def _in_store(self, p: Person) -> dict[str, Any]:
        store = self.rng.choice(_STORES)
        context: dict[str, Any] = {
            "channel": "in_store",
            "library": {"name": "pos-sync", "version": "4.1"},
            "location": {"store_id": store, "city": store[:2], "till": self.rng.randrange(1, 9)},
        }
        traits = {"phone": p.phone} if p.phone else {"email": p.email}
        context["traits"] = traits
        if p.loyalty_card:
            context["externalIds"] = [
                {
                    "id": p.loyalty_card,
                    "type": "loyalty_card",
                    "collection": "users",
                    "encoding": "none",
                }
            ]
        products = [{**self._product(), "quantity": 1} for _ in range(self.rng.randrange(1, 3))]
        p.orders += 1
        return {
            "type": "track",
            "anonymousId": f"pos-{p.loyalty_card or p.index}",
            "event": "Order Completed",
            "properties": {
                "order_id": f"pos-{store}-{self.rng.getrandbits(32):x}",
                "total": round(sum(x["price"] for x in products), 2),
                "currency": "EUR",
                "products": products,
                "payment": "card",
            },
            "context": context,
        }

    def _social(self, p: Person) -> dict[str, Any]:
        handle = p.handle or f"@guest_{p.index}"
        return {
            "type": "track",
            "anonymousId": f"social-{handle}",
            "event": "Post Shared",
            "properties": {
                "network": "instagram",
                "post_id": f"ig-{self.rng.getrandbits(36):x}",
                "url": "https://instagram.com/p/abc",
                "mentions": ["@negozio"],
            },
            "context": {
                "channel": "social",
                "library": {"name": "social-listener", "version": "0.9"},
                "externalIds": [
                    {
                        "id": handle,
                        "type": "instagram_handle",
                        "collection": "users",
                        "encoding": "none",
                    }
                ],
            },
        }

    def _crm(self, p: Person) -> dict[str, Any]:
        traits: dict[str, Any] = {
            "email": p.crm_email,
            "name": p.crm_email.split("@")[0],
            "lifecycle": self.rng.choice(("lead", "customer", "vip")),
        }
        if p.crm_id:
            traits["crm_id"] = p.crm_id
        if p.phone:
            traits["phone"] = p.phone
        return {
            "type": "identify",
            "anonymousId": f"crm-{p.crm_id or p.index}",
            "traits": traits,
            "context": {"channel": "crm", "library": {"name": "crm-sync", "version": "1.2"}},
        }

    def _support(self, p: Person) -> dict[str, Any]:
        ids: dict[str, Any] = {"anonymousId": f"cc-{p.index}"}
        if p.user_id:
            ids = {"userId": p.user_id}
        return {
            "type": "track",
            **ids,
            "event": "Support Call Completed",
            "properties": {
                "reason": self.rng.choice(("delivery", "returns", "sizing")),
                "duration_s": self.rng.randrange(30, 900),
                "resolved": True,
            },
            "context": {
                "channel": "call_center",
                "traits": {"phone": p.phone} if p.phone else {"email": p.email},
                "library": {"name": "cc-connector", "version": "3.0"},
            },
        }

    def _review(self, p: Person) -> dict[str, Any]:
        return {
            "type": "track",
            **self._web_ids(p),
            "event": "Review Written",
            "properties": {
                "rating": self.rng.randrange(3, 6),
                "product_id": f"P-{self.rng.randrange(1, 5000):05d}",
                "text": "Ottima qualità, spedizione veloce.",
            },
            "context": {**self._context(p, "/reviews/new"), "channel": "other"},
        }


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"
