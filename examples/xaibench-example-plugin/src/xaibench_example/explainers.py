"""grad_power: the input gradient's magnitude raised to a power, summed over colour channels."""
import torch

from xaibench.explain import register


@register("grad_power")
def grad_power(model, images, targets, power: float = 2.0):
    """|d logit_target / d pixel| ** power, summed over RGB: the plain gradient map with its largest
    values stressed (power 1 is xaibench's `gradient` with reduce abs_sum)."""
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        score = model(x).gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x)
    return grad.abs().pow(power).sum(1)
