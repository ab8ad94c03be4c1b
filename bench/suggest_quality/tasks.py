"""The suggestion-quality tasks: real data that ships inside packages, small real models.

Every task is built from data already on the machine (scikit-learn's bundled sets, the Python
standard library's own source text): no downloads. A task is everything a training needs: the
data split, a model factory, an optimizer factory, the batch size and the training budget. The
same task object drives the ground-truth grid, the range tests and the trainings at each pick.

Round 1: ``DEV``: rules were compared and the default chosen on these. ``HELD_OUT``: fixed before
any result was looked at and meant to be reported only, but the exploration printed its numbers next
to the dev numbers, so it informed the choice. ``FRESH``: added after the rule was frozen.
Round 2: all 20 of those were the development set (rules and the confirmation design compared,
both frozen); ``NEW``: 10 tasks built after both freezes, never used to compare anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sysconfig
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Data:
    """Tensors of one task. ``x_val``/``y_val`` give the validation loss that defines quality."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@dataclass(frozen=True)
class Task:
    name: str
    data: str  # key of DATASETS
    model: str  # key of MODELS
    optimizer: str  # key of OPTIMIZERS
    batch_size: int  # 0: full batch
    steps: int = 300  # the training budget at a constant lr
    loss: str = "ce"  # "ce" (classification, also per character) or "mse"
    note: str = ""
    options: Dict[str, Any] = field(default_factory=dict)

    def spec(self) -> Dict[str, Any]:
        """What the cached results depend on (a change invalidates the cache)."""
        return {
            "name": self.name, "data": self.data, "model": self.model, "optimizer": self.optimizer,
            "batch_size": self.batch_size, "steps": self.steps, "loss": self.loss, "options": self.options,
            "protocol": PROTOCOL, "torch": torch.__version__.split("+")[0],
        }

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:12]


#: The shared protocol: the constant-lr grid (4 per decade), the training seeds, the range test
#: every contender gets (fastai's defaults: 1e-7 to 10 in 100 steps, exponential), its seeds.
PROTOCOL = {
    "grid": [float(f"{10 ** (-5 + k / 4):.6g}") for k in range(25)],  # 1e-5 ... 10
    "train_seeds": [0, 1],
    "range_start": 1e-7,
    "range_end": 10.0,
    "range_iters": 100,
    "range_seeds": [10, 11, 12],
    "version": 1,
}


# -- data -------------------------------------------------------------------------------------------

def _split(x: np.ndarray, y: np.ndarray, classes: bool) -> Data:
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    n_val = len(x) // 4
    val, train = order[:n_val], order[n_val:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-8
    x = (x - mean) / std
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long) if classes else torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
    return Data(xt[train], yt[train], xt[val], yt[val])


def _sklearn(name: str) -> Data:
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    x, y = loader(return_X_y=True)
    if name == "diabetes":
        y = (y - y.mean()) / y.std()  # standardized target: losses comparable across tasks
        return _split(x.astype(np.float64), y, classes=False)
    return _split(x.astype(np.float64), y, classes=True)


#: Standard-library modules whose source is the text corpus (stable, pure-Python, ~250 kB).
STDLIB_TEXT = ["textwrap", "string", "heapq", "bisect", "functools", "argparse", "fractions", "difflib"]
SEQ_LEN = 32


def _text() -> Data:
    stdlib = sysconfig.get_paths()["stdlib"]
    text = "".join(open(os.path.join(stdlib, f"{m}.py"), encoding="utf-8").read() for m in STDLIB_TEXT)
    # Printable ASCII + newline; anything else becomes '?' (a fixed 97-symbol vocabulary).
    codes = np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8).astype(np.int64)
    codes = np.where(codes == 10, 95, np.clip(codes - 32, 0, 96))
    data = torch.tensor(codes)
    n = len(data) // (SEQ_LEN + 1)
    windows = data[: n * (SEQ_LEN + 1)].reshape(n, SEQ_LEN + 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    val, train = order[:256], order[256:]
    return Data(windows[train, :-1], windows[train, 1:], windows[val, :-1], windows[val, 1:])


VOCAB = 97


def _least_squares() -> Data:
    # The diabetes features, standardized, with a noisy linear target of fixed weights: full-batch
    # gradient descent on it is linear in the weights, so its loss after T steps is known exactly.
    from sklearn import datasets

    x, _ = datasets.load_diabetes(return_X_y=True)
    rng = np.random.default_rng(1)
    w = rng.normal(size=x.shape[1])
    x = (x - x.mean(0)) / x.std(0)
    y = x @ w + rng.normal(scale=0.5, size=len(x))
    return _split(x, y, classes=False)


#: A second, disjoint set of standard-library modules for the post-freeze text task.
STDLIB_TEXT_2 = ["calendar", "pprint", "shlex", "tokenize", "gettext"]


def _text2() -> Data:
    global STDLIB_TEXT
    saved = STDLIB_TEXT
    try:
        STDLIB_TEXT = STDLIB_TEXT_2
        return _text()
    finally:
        STDLIB_TEXT = saved


def _linnerud() -> Data:
    # 20 athletes, 3 exercise counts -> 3 body measurements (standardized): a tiny multi-output regression.
    from sklearn import datasets

    x, y = datasets.load_linnerud(return_X_y=True)
    y = (y - y.mean(0)) / y.std(0)
    d = _split(x.astype(np.float64), y[:, 0], classes=False)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    n_val = len(x) // 4
    yt = torch.tensor(y, dtype=torch.float32)
    return Data(d.x_train, yt[order[n_val:]], d.x_val, yt[order[:n_val]])


def _synthetic(kind: str) -> Data:
    """SYNTHETIC data from scikit-learn's fetch-free generators, fixed seeds (labelled as such)."""
    from sklearn import datasets

    if kind == "moons":
        x, y = datasets.make_moons(n_samples=1000, noise=0.25, random_state=0)
    else:
        x, y = datasets.make_classification(n_samples=1500, n_features=20, n_informative=8, n_redundant=4,
                                            n_classes=3, flip_y=0.05, class_sep=0.8, random_state=0)
    return _split(x.astype(np.float64), y, classes=True)


DATASETS: Dict[str, Callable[[], Data]] = {
    "digits": lambda: _sklearn("digits"),
    "breast_cancer": lambda: _sklearn("breast_cancer"),
    "wine": lambda: _sklearn("wine"),
    "iris": lambda: _sklearn("iris"),
    "diabetes": lambda: _sklearn("diabetes"),
    "stdlib_text": _text,
    "least_squares": _least_squares,
    "stdlib_text_2": _text2,
    "linnerud": _linnerud,
    "synthetic_moons": lambda: _synthetic("moons"),
    "synthetic_classification": lambda: _synthetic("classification"),
}


@lru_cache(maxsize=None)
def load(name: str) -> Data:
    return DATASETS[name]()


# -- models -----------------------------------------------------------------------------------------

class CharTransformer(nn.Module):
    """A two-layer causal transformer over characters (d=48, 4 heads)."""

    def __init__(self, d: int = 48) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.zeros(SEQ_LEN, d))
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, VOCAB)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(SEQ_LEN), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos[: x.shape[1]]
        return self.head(self.blocks(h, mask=self.mask[: x.shape[1], : x.shape[1]], is_causal=True))


class CharGRU(nn.Module):
    def __init__(self, d: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.gru = nn.GRU(d, hidden, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(self.embed(x))[0])


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, 1, 8, 8))


def _mlp(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, n_out))


def _bn_mlp(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_in, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, n_out),
    )


def _deep_mlp(n_in: int, n_out: int, act: Callable[[], nn.Module] = nn.ReLU, depth: int = 4) -> nn.Module:
    layers: List[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, 64), act()]
        width = 64
    return nn.Sequential(*layers, nn.Linear(width, n_out))


class ResMLP(nn.Module):
    """Three pre-LayerNorm residual blocks of width 64."""

    def __init__(self, n_in: int, n_out: int, d: int = 64) -> None:
        super().__init__()
        self.inp = nn.Linear(n_in, d)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
                                    for _ in range(3))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


class CharCNN(nn.Module):
    """Two causal 1-d convolutions (kernel 5) over character embeddings."""

    def __init__(self, d: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.c1 = nn.Conv1d(d, hidden, 5)
        self.c2 = nn.Conv1d(hidden, hidden, 5)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).transpose(1, 2)
        h = torch.relu(self.c1(nn.functional.pad(h, (4, 0))))
        h = torch.relu(self.c2(nn.functional.pad(h, (4, 0))))
        return self.head(h.transpose(1, 2))


MODELS: Dict[str, Callable[[int, int], nn.Module]] = {
    "mlp": _mlp,
    "bn_mlp": _bn_mlp,
    "linear": lambda n_in, n_out: nn.Linear(n_in, n_out),  # logistic / linear regression
    "linear_nobias": lambda n_in, n_out: nn.Linear(n_in, n_out, bias=False),
    "cnn": lambda n_in, n_out: SmallCNN(),
    "char_transformer": lambda n_in, n_out: CharTransformer(),
    "char_gru": lambda n_in, n_out: CharGRU(),
    "deep_mlp": _deep_mlp,
    "deep_tanh_mlp": lambda n_in, n_out: _deep_mlp(n_in, n_out, nn.Tanh),
    "res_mlp": ResMLP,
    "char_cnn": lambda n_in, n_out: CharCNN(),
}

# The optimizers are built at lr=1.0; the harness sets the lr it trains or sweeps at.
OPTIMIZERS: Dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd": lambda p: torch.optim.SGD(p, lr=1.0),
    "momentum": lambda p: torch.optim.SGD(p, lr=1.0, momentum=0.9),
    "nesterov_wd": lambda p: torch.optim.SGD(p, lr=1.0, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1.0),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1.0, weight_decay=0.01),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1.0),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1.0),
    "adadelta": lambda p: torch.optim.Adadelta(p, lr=1.0),
    "nadam": lambda p: torch.optim.NAdam(p, lr=1.0),
    "radam": lambda p: torch.optim.RAdam(p, lr=1.0),
    "adamax": lambda p: torch.optim.Adamax(p, lr=1.0),
}


def shapes(task: Task) -> Tuple[int, int]:
    d = load(task.data)
    if task.loss == "mse":
        return d.x_train.shape[1], d.y_train.shape[1]
    if task.data.startswith("stdlib_text"):
        return VOCAB, VOCAB
    return d.x_train.shape[1], int(d.y_train.max()) + 1


def build(task: Task, seed: int) -> Tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = MODELS[task.model](*shapes(task))
    return model, OPTIMIZERS[task.optimizer](model.parameters())


def criterion(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task.loss == "mse":
        return nn.functional.mse_loss
    return lambda out, y: nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def batches(task: Task, seed: int, n: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` training batches of a seeded shuffle (epochs reshuffled, last partial batch dropped)."""
    d = load(task.data)
    size = len(d.x_train) if task.batch_size == 0 else task.batch_size
    g = torch.Generator().manual_seed(seed)
    out: List[Tuple[torch.Tensor, torch.Tensor]] = []
    while len(out) < n:
        order = torch.randperm(len(d.x_train), generator=g) if task.batch_size else torch.arange(len(d.x_train))
        for i in range(0, len(order) - size + 1, size):
            idx = order[i:i + size]
            out.append((d.x_train[idx], d.y_train[idx]))
            if len(out) == n:
                break
    return out


# -- the suite --------------------------------------------------------------------------------------

DEV: List[Task] = [
    Task("digits_mlp_sgd", "digits", "mlp", "sgd", 32),
    Task("digits_cnn_momentum", "digits", "cnn", "momentum", 32),
    Task("breast_cancer_logreg_sgd", "breast_cancer", "linear", "sgd", 16, note="convex"),
    Task("diabetes_linreg_sgd_b4", "diabetes", "linear", "sgd", 4, loss="mse", note="noisy small-batch regression"),
    Task("text_transformer_adamw", "stdlib_text", "char_transformer", "adamw", 32),
    Task("wine_mlp_rmsprop", "wine", "mlp", "rmsprop", 16),
    Task("least_squares_gd", "least_squares", "linear_nobias", "sgd", 0, loss="mse",
         note="full-batch GD: the loss at every lr is known in closed form"),
]
HELD_OUT: List[Task] = [
    Task("digits_bn_mlp_adam", "digits", "bn_mlp", "adam", 32),
    Task("iris_mlp_nesterov_wd", "iris", "mlp", "nesterov_wd", 16),
    Task("diabetes_mlp_adamw", "diabetes", "mlp", "adamw", 16, loss="mse"),
    Task("text_gru_adam", "stdlib_text", "char_gru", "adam", 32),
    Task("breast_cancer_mlp_momentum", "breast_cancer", "mlp", "momentum", 32),
    Task("digits_logreg_adam", "digits", "linear", "adam", 64, note="convex"),
    Task("wine_bn_mlp_sgd", "wine", "bn_mlp", "sgd", 16),
]
#: Added after the default rule was fixed (commit d5cf1f5), because the exploration script had
#: printed the held-out half next to the dev half while rules were compared: HELD_OUT informed the
#: choice, these tasks did not. Never used to compare or tune rules.
FRESH: List[Task] = [
    Task("iris_logreg_sgd", "iris", "linear", "sgd", 16, note="convex"),
    Task("wine_mlp_adam", "wine", "mlp", "adam", 16),
    Task("breast_cancer_bn_mlp_rmsprop", "breast_cancer", "bn_mlp", "rmsprop", 32),
    Task("digits_cnn_adamw", "digits", "cnn", "adamw", 32),
    Task("diabetes_mlp_momentum", "diabetes", "mlp", "momentum", 16, loss="mse"),
    Task("digits_mlp_nesterov_wd", "digits", "mlp", "nesterov_wd", 64),
]
#: Added after the second freeze (commit 985c148: all 20 tasks above were round 2's development set and
#: capped was frozen unchanged): new data / model / optimizer combinations, never used to compare rules.
#: Two are SYNTHETIC (scikit-learn's make_moons / make_classification, fixed seeds), labelled so.
NEW: List[Task] = [
    Task("digits_deep_mlp_adagrad_b128", "digits", "deep_mlp", "adagrad", 128),
    Task("breast_cancer_mlp_adadelta", "breast_cancer", "mlp", "adadelta", 64),
    Task("wine_deep_mlp_sgd_b8", "wine", "deep_mlp", "sgd", 8, note="plain SGD, no momentum"),
    Task("linnerud_linreg_sgd_b4", "linnerud", "linear", "sgd", 4, loss="mse", note="15 training samples, 3 targets"),
    Task("synthetic_moons_mlp_sgd_b64", "synthetic_moons", "mlp", "sgd", 64, note="SYNTHETIC (make_moons)"),
    Task("synthetic_classif_logreg_adagrad", "synthetic_classification", "linear", "adagrad", 32,
         note="SYNTHETIC (make_classification); convex"),
    Task("text2_char_cnn_nadam_b16", "stdlib_text_2", "char_cnn", "nadam", 16),
    Task("diabetes_tanh_mlp_rmsprop_b64", "diabetes", "deep_tanh_mlp", "rmsprop", 64, loss="mse"),
    Task("digits_res_mlp_radam", "digits", "res_mlp", "radam", 32),
    Task("iris_mlp_adamax_b8", "iris", "mlp", "adamax", 8),
]
ALL: List[Task] = DEV + HELD_OUT + FRESH + NEW
BY_NAME: Dict[str, Task] = {t.name: t for t in ALL}


def closed_form_val_loss(task: Task, lr: float, seed: int) -> float:
    """The least-squares task's validation MSE after ``task.steps`` full-batch GD steps at ``lr``,
    from the eigen-decomposition of the Hessian: e_T = (I - lr H)^T e_0 (float64)."""
    d = load(task.data)
    x = d.x_train.double().numpy()
    y = d.y_train.double().numpy().ravel()
    xv = d.x_val.double().numpy()
    yv = d.y_val.double().numpy().ravel()
    model, _ = build(task, seed)
    w0 = model.weight.detach().double().numpy().ravel()
    hess = 2.0 * x.T @ x / len(x)  # of mean((xw - y)^2)
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]
    lam, q = np.linalg.eigh(hess)
    with np.errstate(over="ignore", invalid="ignore"):
        factor = (1.0 - lr * lam) ** task.steps
        w = w_star + q @ (factor * (q.T @ (w0 - w_star)))
        value = float(np.mean((xv @ w - yv) ** 2))
    return value if math.isfinite(value) else math.inf
