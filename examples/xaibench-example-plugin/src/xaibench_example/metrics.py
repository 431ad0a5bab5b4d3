"""peak_share: how much of a map's mass sits in its single largest pixel (1 = one point, 1/pixels = flat)."""
from xaibench.metrics import over_maps, register


@register("peak_share")
def peak_share(ctx):
    def score(batch):
        flat = batch.relevance.flatten(1)  # the positive part (catalog: maps positive)
        yield "peak_share", flat.max(1).values / flat.sum(1).clamp_min(1e-12)

    return over_maps(ctx, score, family="peak_share")
