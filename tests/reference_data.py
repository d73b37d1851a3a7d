"""Reference rows that migrations create and transactional tests' flushes wipe out."""

from __future__ import annotations

TIERS = [
    ("FREE", "Free", 3, True, 0),
    ("VIP", "VIP", 20, False, 1),
    ("PREMIUM", "Premium", 50, False, 2),
]
#: apps/accounts/migrations/0004_own_accounts_tier.py: own upstream accounts per tier.
OWN_ACCOUNTS = {"VIP": 2, "PREMIUM": 10}
#: apps/billing/migrations/0008_own_account_fees.py: the platform fee is 20% of the price.
OWN_FEE_PERCENT = 20
PRICES: dict[str, tuple[int | None, int | None, int | None]] = {
    "IMAGINE": (14000, 7000, 28000),
    "UPSCALE": (3500, 1750, 7000),
    "VARIATION": (14000, 7000, 28000),
    "REROLL": (14000, 7000, 28000),
    "ZOOM": (14000, 7000, 28000),
    "PAN": (14000, 7000, 28000),
    "DESCRIBE": (3500, 1750, 7000),
    "BLEND": (14000, 7000, 28000),
    "SHORTEN": (3500, 1750, 7000),
    "SWAP_FACE": (3500, 1750, 7000),
    "IMAGINE_DRAFT": (7000, 3500, 14000),
    "EDIT": (14000, 7000, 28000),
    "RETEXTURE": (14000, 7000, 28000),
    # apps/billing/migrations/0004_video_prices.py: a batch of 4 clips, 8x an image job.
    "VIDEO": (112000, 56000, 224000),
    # apps/billing/migrations/0007_price_video_hd.py: 3.2x VIDEO; no RELAX row (no HD in Relax).
    "VIDEO_HD": (358400, None, 716800),
}


def ensure_reference_data() -> None:
    from apps.accounts.models import MembershipTier
    from apps.billing.models import Price

    if not MembershipTier.objects.exists():
        for code, name, limit, is_default, order in TIERS:
            MembershipTier.objects.create(
                code=code,
                name=name,
                max_unfinished_tasks=limit,
                is_default=is_default,
                sort_order=order,
                max_own_accounts=OWN_ACCOUNTS.get(code, 0),
            )
    # Row by row: a database kept from before a price migration gets the new rows too.
    have = set(Price.objects.values_list("action", "mode"))
    Price.objects.bulk_create(
        Price(
            action=action,
            mode=mode,
            tokens=amount,
            own_account_tokens=-(-amount * OWN_FEE_PERCENT // 100),
        )
        for action, amounts in PRICES.items()
        for mode, amount in zip(("FAST", "RELAX", "TURBO"), amounts, strict=True)
        if (action, mode) not in have and amount is not None
    )
