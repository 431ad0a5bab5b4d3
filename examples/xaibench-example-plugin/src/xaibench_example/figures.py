"""peak_share figure: the family's mean per (variant, explainer), one dot per seed."""
import matplotlib.pyplot as plt

from xaibench.figures import NotApplicable, palette, register, save, table


@register("peak_share")
def peak_share(cfg, dataset):
    data = table(dataset, "peak_share")
    if data.empty:
        raise NotApplicable("no peak_share rows in this run")
    means = data.groupby(["variant", "method"]).value.mean().unstack("variant")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    colours = palette(means.columns)
    means.plot.bar(ax=ax, color=[colours[v] for v in means.columns], rot=0)
    ax.set(ylabel="share of map mass in its top pixel", xlabel="", title=f"{dataset}: peak share (mean over seeds)")
    return save(fig, cfg, dataset, "peak_share")
