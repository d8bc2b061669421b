"""The ``shared_tower_fcos_head``: torchvision's FCOSHead with one conv tower
shared by the classification and the box branch."""

from __future__ import annotations

from torchvision.models.detection.fcos import FCOSHead


class SharedTowerFCOSHead(FCOSHead):
    """Same interface as ``FCOSHead`` (``forward`` and ``compute_loss``), so
    the ``fcos`` detector uses it unchanged; only the towers are tied."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 2):
        super().__init__(in_channels, num_anchors, num_classes, num_convs=num_convs)
        tower = self.classification_head.conv
        self.regression_head.conv = tower  # one module, two users: shared weights
        self.shared_tower = tower
        # Counted by the example's tests: the detector really called this head.
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)

    def tower_parameters(self) -> int:
        return sum(p.numel() for p in self.shared_tower.parameters())
