"""``freeze``: freeze and unfreeze parameter groups by name prefix."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from detcore import hookimpl
from detcore.errors import DetcoreError

_NORMS = (_BatchNorm, nn.GroupNorm, nn.LayerNorm)


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


class FreezeHook:
    """See :func:`detcore_hooks.plugin.freeze`.

    Frozen parameters get ``requires_grad = False`` and their gradients are
    dropped, so the optimizer (which skips parameters without a gradient)
    leaves them, and their momentum/weight decay, alone.
    """

    name = "freeze"

    def __init__(self, *, prefixes: list[str], from_epoch: int, until_epoch: int | None, norm_eval: bool):
        self.prefixes = [p.rstrip(".") for p in prefixes]
        self.from_epoch = from_epoch
        self.until_epoch = until_epoch
        self.norm_eval = norm_eval
        self.params: dict[str, nn.Parameter] = {}
        self.norms: list[nn.Module] = []
        self.frozen = False

    def active(self, epoch: int) -> bool:
        return epoch >= self.from_epoch and (self.until_epoch is None or epoch < self.until_epoch)

    @hookimpl
    def detcore_before_run(self, runner) -> None:
        model = runner.model
        named = dict(model.named_parameters())
        for prefix in self.prefixes:
            hits = {n: p for n, p in named.items() if _matches(n, prefix)}
            if not hits:
                tops = sorted({n.split(".")[0] for n in named})
                raise DetcoreError(
                    f"freeze: no parameter of the model is named '{prefix}' or starts with "
                    f"'{prefix}.'. The model's top-level modules: {', '.join(tops)} (see "
                    f"model.named_parameters() for deeper names). Fix the hook's 'prefixes'."
                )
            self.params.update(hits)
        self.norms = [
            m for n, m in model.named_modules()
            if isinstance(m, _NORMS) and any(_matches(n, p) for p in self.prefixes)
        ]
        if runner.world_size > 1 and not runner.cfg.dist.find_unused_parameters:
            raise DetcoreError(
                "freeze: in distributed runs DistributedDataParallel must be told that some "
                "parameters get no gradient; set [dist] find_unused_parameters = true in the run file."
            )

    def _set(self, runner, frozen: bool) -> None:
        for p in self.params.values():
            p.requires_grad_(not frozen)
            if frozen:
                p.grad = None
        self.frozen = frozen
        if runner.is_main:
            runner.logger.info(
                "freeze: %s %d parameter tensor(s) under %s",
                "froze" if frozen else "unfroze",
                len(self.params),
                ", ".join(self.prefixes),
            )

    # tryfirst: parameters are frozen before other hooks see the epoch start.
    @hookimpl(tryfirst=True)
    def detcore_before_train_epoch(self, runner, epoch: int) -> None:
        want = self.active(epoch)
        if want != self.frozen:
            self._set(runner, want)

    @hookimpl
    def detcore_before_train_iter(self, runner, iteration: int, batch) -> None:
        # The runner puts the model in train mode after each validation; keep
        # the frozen normalisation layers' statistics fixed.
        if self.frozen and self.norm_eval:
            for m in self.norms:
                m.eval()
