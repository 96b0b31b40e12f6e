"""Small CNNs: LeNet-5 (LeCun et al., "Gradient-based learning applied to document
recognition", Proc. IEEE 1998) adapted to any input size, and the oscilloscope-waveform
network of the kernel-visualisation study (``../shared/seeds/003``: large-kernel
convolutions followed by fully connected layers).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model

__all__ = ["LeNet", "PulseCNN"]


class LeNet(nn.Module):
    """conv5-pool-conv5-pool-fc120-fc84-fc; 'same' padding so it fits inputs down to 8x8."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: int = 6, hidden: int = 120,
                 bias: bool = True):
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, width, 5, padding=2, bias=bias)
        self.conv2 = nn.Conv2d(width, 16, 5, padding=2, bias=bias)
        # One activation/pooling module per use: propagation rules (DeepLIFT, guided backprop) hook modules.
        self.relu1, self.relu2, self.relu3, self.relu4 = (nn.ReLU() for _ in range(4))
        self.pool1, self.pool2 = nn.MaxPool2d(2), nn.MaxPool2d(2)
        if h < 4 or w < 4:
            raise ValueError("LeNet needs inputs of at least 4x4")
        self.num_features = 16 * (h // 4) * (w // 4)
        self.fc1 = nn.Linear(self.num_features, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, 84, bias=bias)
        self.fc = nn.Linear(84, num_classes, bias=bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        return self.pool2(self.relu2(self.conv2(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.fc(self.relu4(self.fc2(self.relu3(self.fc1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(
    "lenet", description="LeNet-5 style CNN for small inputs (MNIST, digits)", default_input=(1, 28, 28),
    target_layer="conv2", first_layer="conv1", classifier_layer="fc", feature_layer="relu4",
    paper="http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf",
    recipe=dict(optimizer="adam", lr=1e-2, schedule="cosine", batch_size=128),
)
def lenet(num_classes: int, input_shape: tuple[int, int, int], width: int = 6, hidden: int = 120,
          bias: bool = True) -> nn.Module:
    return LeNet(num_classes, input_shape, width, hidden, bias)


_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class PulseCNN(nn.Module):
    """Two convolutions with large kernels, max pooling, then fully connected layers.

    The study's configuration is 5 kernels of 25x25 (stride 1, no padding), a second
    25x25 convolution down to one channel, 2x2 max pooling, tiny dropout and fully
    connected layers 4096 -> 1024 -> 3 with tanh (``pulse-cnn-paper``).  The default
    ``pulse-cnn`` is a smaller, easier-to-train member of the same family.

    ``dropout`` is applied to the pooled features (before the first fully connected layer),
    as in the study, and also before ``fc`` when ``dropout_before_fc`` (``pulse-cnn``'s
    behaviour; the study's model applies it once).
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        kernels: int = 8,
        kernel_size: int = 9,
        conv2_channels: int = 16,
        conv2_kernel: int = 5,
        pool: int = 4,
        hidden: tuple[int, ...] | list[int] = (64,),
        activation: str = "relu",
        output_activation: str | None = None,
        dropout: float = 0.0,
        dropout_before_fc: bool = True,
    ):
        super().__init__()
        if activation not in _ACTS or (output_activation is not None and output_activation not in _ACTS):
            raise ValueError(f"activation must be one of {sorted(_ACTS)}")
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, kernels, kernel_size)
        self.conv2 = nn.Conv2d(kernels, conv2_channels, conv2_kernel)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.pool = nn.MaxPool2d(pool)
        oh = (h - kernel_size + 1 - conv2_kernel + 1) // pool
        ow = (w - kernel_size + 1 - conv2_kernel + 1) // pool
        if oh < 1 or ow < 1:
            raise ValueError("kernels too large for the input")
        self.num_features = conv2_channels * oh * ow
        self.dropout = nn.Dropout(dropout)
        self.dropout_before_fc = dropout_before_fc
        layers: list[nn.Module] = []
        prev = self.num_features
        for i, n in enumerate(hidden):
            layers += [nn.Linear(prev, n), nn.ReLU() if i == 0 else _ACTS[activation]()]
            prev = n
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(prev, num_classes)
        self.out_act = _ACTS[output_activation]() if output_activation else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        return self.pool(self.relu2(self.conv2(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hidden(self.dropout(torch.flatten(x, 1)))
        return self.out_act(self.fc(self.dropout(x) if self.dropout_before_fc else x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_SEED = "../shared/seeds/003 (tbensky/CNNKernels)"


@register_model(
    "pulse-cnn", description="waveform CNN: 8 9x9 kernels, 16 5x5, fc 64 (small default)", default_input=(1, 100, 100),
    target_layer="conv2", first_layer="conv1", paper=_SEED,
    classifier_layer="fc", feature_layer="hidden",
    recipe=dict(optimizer="adam", lr=2e-3, schedule="cosine", batch_size=32, epochs=5, augment=False),
)
def pulse_cnn(
    num_classes: int,
    input_shape: tuple[int, int, int],
    kernels: int = 8,
    kernel_size: int = 9,
    conv2_channels: int = 16,
    conv2_kernel: int = 5,
    pool: int = 4,
    hidden: list[int] = [64],  # noqa: B006 - read-only default, recorded in metadata
    activation: str = "relu",
    output_activation: str | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    return PulseCNN(num_classes, input_shape, kernels, kernel_size, conv2_channels, conv2_kernel, pool, tuple(hidden),
                    activation, output_activation, dropout)


@register_model(
    "pulse-cnn-paper", description="waveform CNN as in the study: 5 25x25 kernels, 25x25 conv, fc 4096-1024, tanh",
    default_input=(1, 100, 100), target_layer="conv2", first_layer="conv1", paper=_SEED,
    classifier_layer="fc", feature_layer="hidden",
    # The study's recipe (../shared/seeds/003): plain SGD, no weight decay.
    recipe=dict(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, loss="l1", batch_size=1000,
                schedule="constant", augment=False),
)
def pulse_cnn_paper(
    num_classes: int,
    input_shape: tuple[int, int, int],
    kernels: int = 5,
    kernel_size: int = 25,
    hidden: list[int] = [4096, 1024],  # noqa: B006
    dropout: float = 0.01,
) -> nn.Module:
    return PulseCNN(num_classes, input_shape, kernels, kernel_size, conv2_channels=1, conv2_kernel=kernel_size, pool=2,
                    hidden=tuple(hidden), activation="tanh", output_activation="tanh", dropout=dropout,
                    dropout_before_fc=False)
