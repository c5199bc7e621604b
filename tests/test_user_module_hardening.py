"""A user's own module, tried as an adversary would: each test writes a small module of its own
beside its sweep file, and shows that greenbench refuses at load what it can know before
training, and never throws away a point it trained."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from greenbench.models import plugins
from greenbench.point.run import run_point
from greenbench.records import PointResult
from greenbench.sweep.schema import expand, load_sweep
from tests.helpers import cli

# Shared by the modules below, which each test writes into its own folder with its own class.
DATA = '''
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class Tokens(pl.LightningDataModule):
    """Sequences of 16 token ids from a vocabulary of 12, a character-level toy corpus."""

    def __init__(self, count: int = 64, batch_size: int = 16):
        super().__init__()
        self.count, self.batch_size = count, batch_size

    def setup(self, stage):
        generator = torch.Generator().manual_seed(3)
        start = torch.randint(0, 12, (self.count, 1), generator=generator)
        self.train_set = TensorDataset((start + torch.arange(17)) % 12)
        self.val_set = TensorDataset((start[:16] + torch.arange(17)) % 12)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)
'''

CHAR_MODEL = DATA + '''

class CharModel(pl.LightningModule):
    """A character-level next-token model whose sample(n) gives token ids (n, 16)."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.embed = torch.nn.Embedding(12, hidden)
        self.out = torch.nn.Linear(hidden, 12)

    def loss(self, batch):
        (tokens,) = batch
        logits = self.out(self.embed(tokens[:, :-1]))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 12),
                                                 tokens[:, 1:].reshape(-1))

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)

    def sample(self, n):
        tokens = torch.zeros(n, 1, dtype=torch.long, device=self.device)
        for _ in range(15):
            probabilities = self.out(self.embed(tokens[:, -1])).softmax(-1)
            tokens = torch.cat([tokens, torch.multinomial(probabilities, 1)], dim=1)
        return tokens
'''


def project(folder: Path, module: str, source: str, sweep: str) -> Path:
    """``module``.py holding ``source``, and a sweep file, in ``folder``."""
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    (folder / "sweep.yaml").write_text(textwrap.dedent(sweep))
    return folder / "sweep.yaml"


def only_point(sweep: Path) -> PointResult:
    """The one point of the sweep file, run in this process."""
    (spec,) = expand(load_sweep(sweep))
    return run_point(spec)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_module_that_samples_token_ids_trains_and_keeps_its_metric_and_sampling_energy(
        in_tmp: Path) -> None:
    sweep = project(in_tmp, "charlm", CHAR_MODEL, """\
        name: chars
        model: {class_path: charlm.CharModel}
        data: {class_path: charlm.Tokens}
        quality: {metric: val_loss, mode: min}
        train: {epochs: 2}
        energy: {idle_seconds: 0, warmup_steps: 1}
        eval: {num_samples: 50}
        generate: {num_images: 32, batch_size: 16}
        """)
    result = only_point(sweep)
    record = result.record

    assert record["status"] == "ok", record["reason"]
    assert record["quality"]["final"]["val_loss"] > 0
    assert record["quality"]["withheld"] == (
        "image metrics withheld: sample(n) returned a tensor of shape (50, 16), not (N, C, H, "
        "W) images")
    assert "kid" not in record["quality"]["final"]
    generation = record["generation"]
    assert generation["images"] == 32 and generation["item_shape"] == [16]
    assert generation["j_per_image"] > 0  # the generate window measured sampling
    assert not any(name.startswith("images/") for name in result.files)  # no image grid


@pytest.mark.parametrize("module, signature, body, why", [
    ("decoder_logits", "self, logits, temperature=1.0", "return logits",
     "not sampled or scored: sample(logits, temperature=1.0) takes 'logits', not a count of "
     "samples"),
    ("decoder_n_temperature", "self, n, temperature", "return torch.zeros(n)",
     "not sampled or scored: sample(n, temperature) does not take one count of samples"),
])
def test_a_sample_method_that_takes_no_count_is_not_a_sampler(
        in_tmp: Path, module: str, signature: str, body: str, why: str) -> None:
    # a module name of each case's own: both run in this process, which imports it once
    source = CHAR_MODEL.replace("    def sample(self, n):",
                                f"    def sample({signature}):\n        {body}\n\n"
                                "    def unused(self, n):")
    sweep = project(in_tmp, module, source, f"""\
        name: decoder
        model: {{class_path: {module}.CharModel}}
        data: {{class_path: {module}.Tokens}}
        quality: {{metric: val_loss, mode: min}}
        train: {{epochs: 1}}
        energy: {{idle_seconds: 0, warmup_steps: 1}}
        """)
    record = only_point(sweep).record
    assert record["status"] == "ok", record["reason"]
    assert record["quality"]["withheld"] == why
    assert record["generation"] is None and "val_loss" in record["quality"]["final"]


def test_a_sample_that_returns_vectors_keeps_the_point_and_says_why_it_is_not_scored(
        in_tmp: Path) -> None:
    source = CHAR_MODEL.replace("    def sample(self, n):", "    def sample(self, n):\n"
                                "        return torch.rand(n, 64) * 2 - 1\n\n"
                                "    def unused(self, n):")
    sweep = project(in_tmp, "vectors", source, """\
        name: vectors
        model: {class_path: vectors.CharModel}
        data: {class_path: vectors.Tokens}
        quality: {metric: val_loss, mode: min}
        train: {epochs: 1}
        energy: {idle_seconds: 0, warmup_steps: 1}
        eval: {num_samples: 50}
        generate: {num_images: 16, batch_size: 16}
        """)
    record = only_point(sweep).record
    assert record["status"] == "ok", record["reason"]
    assert "sample(n) returned a tensor of shape (50, 64)" in record["quality"]["withheld"]
    assert record["generation"]["item_shape"] == [64]


def test_a_feature_space_metric_for_a_module_that_cannot_sample_is_refused_at_load(
        in_tmp: Path) -> None:
    source = CHAR_MODEL.replace("    def sample(self, n):", "    def draw(self, n):")
    project(in_tmp, "nosampler", source, """\
        name: nosampler
        model: {class_path: nosampler.CharModel}
        data: {class_path: nosampler.Tokens}
        quality: {metric: kid}
        """)
    done = cli("run", "sweep.yaml", cwd=in_tmp)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: sweep.yaml: quality.metric: kid is greenbench's score of generated samples, "
        "and CharModel cannot be sampled (it has no sample(n)); name a metric the module logs")
    assert not (in_tmp / "runs").exists()


NET = '''
import lightning.pytorch as pl
import torch


class Net(pl.LightningModule):
    def __init__(self, hidden: int = 2):
        super().__init__()
        self.layer = torch.nn.Linear(4, hidden)
'''

DATA_MODULE = '''
import lightning.pytorch as pl


class Data(pl.LightningDataModule):
    pass
'''


@pytest.mark.parametrize("hidden, widths, expected", [
    (0, "[1.0]", "model.width_arg: hidden is 0; width multiplies it, so it must be a positive "
                 "whole number"),
    (-4, "[1.0]", "model.width_arg: hidden is -4"),
    (2, "[0.25, 0.5, 1.0]", "grid.width: 0.25 and 0.5 both give hidden=1 (2 x width, rounded, "
                            "at least 1): the same model twice"),
])
def test_widths_that_train_the_same_model_or_none_are_refused_at_load(
        in_tmp: Path, hidden: int, widths: str, expected: str) -> None:
    (in_tmp / "widthy.py").write_text(NET + DATA_MODULE)
    (in_tmp / "sweep.yaml").write_text(
        f"name: w\nmodel: {{class_path: widthy.Net, init_args: {{hidden: {hidden}}}, "
        f"width_arg: hidden}}\ndata: {{class_path: widthy.Data}}\n"
        f"quality: {{metric: val_loss, mode: min}}\ngrid: {{width: {widths}}}\n")
    done = cli("run", "sweep.yaml", cwd=in_tmp)
    assert done.returncode == 2 and not (in_tmp / "runs").exists()
    assert done.stderr.startswith(f"error: sweep.yaml: {expected}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("exit_call, expected", [
    ("sys.exit(3)", "importing quits called sys.exit(3)"),
    ("os._exit(4)", "importing quits called os._exit(4)"),
])
def test_a_module_that_exits_while_imported_is_one_line_naming_the_field(
        in_tmp: Path, exit_call: str, expected: str) -> None:
    from tests.helpers import greenbench

    (in_tmp / "quits.py").write_text(f"import os, sys\n{exit_call}\n")
    (in_tmp / "sweep.yaml").write_text(
        "name: q\nmodel: {class_path: quits.Net}\nquality: {metric: val_loss, mode: min}\n")
    done = greenbench("run", "sweep.yaml", cwd=in_tmp)  # os._exit would end this process
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "model.class_path: " in line and expected in line
    assert not (in_tmp / "runs").exists()


def test_a_subset_with_no_items_fails_with_greenbench_s_reason_whatever_drop_last() -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from greenbench.point.subset import training_subset

    one = TensorDataset(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    for drop_last in (False, True):
        with pytest.raises(ValueError, match=r"data_fraction 0.5 leaves none of the 1 training "
                                             r"items; raise data_fraction"):
            training_subset(DataLoader(one, batch_size=4, drop_last=drop_last), 0.5, seed=0)


def test_huge_integer_init_args_stay_exact_and_apart(in_tmp: Path) -> None:
    from greenbench import results
    from greenbench.report import tables
    from tests.helpers import record

    big = 2**60
    runs = [record(name, config={"model": "mypkg.Net", "model_init_args": {"seed_offset": value},
                                 "quality": {"metric": "kid", "mode": "min"}})
            for name, value in (("a", big), ("b", big + 1), ("c", 10**29))]
    frame = results.frame(runs).set_index("run_id")
    column = frame["model.init_args.seed_offset"]
    assert column.to_dict() == {"a": str(big), "b": str(big + 1), "c": str(10**29)}
    summary = tables.summarise(frame.reset_index())
    assert len(summary) == 3  # three configurations, never merged by rounding
    assert any(str(10**29) in label for label in summary["label"])


NO_VALIDATION = DATA.replace(
    "    def val_dataloader(self):\n        return DataLoader(self.val_set, "
    "batch_size=self.batch_size)\n", "") + '''

class Counter(pl.LightningModule):
    def __init__(self, log_as: str = "epoch"):
        super().__init__()
        self.log_as = log_as
        self.embed = torch.nn.Embedding(12, 4)

    def training_step(self, batch, batch_idx):
        (tokens,) = batch
        loss = self.embed(tokens).square().mean()
        value = loss if self.log_as != "nan" else loss * float("nan")
        self.log("train_loss", value, on_step=self.log_as == "step",
                 on_epoch=self.log_as != "step")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
'''


@pytest.mark.parametrize("log_as, status, says", [
    ("epoch", "ok", None),
    ("step", "ok", None),  # in training, a per-step value is read at the epoch's end
    ("nan", "failed", "quality.metric 'train_loss' was logged in training (it has no "
                      "validation) but never finite (last: nan)"),
])
def test_without_validation_the_metric_comes_from_training_and_the_reasons_are_honest(
        in_tmp: Path, log_as: str, status: str, says: str | None) -> None:
    sweep = project(in_tmp, "noval", NO_VALIDATION, f"""\
        name: noval
        model: {{class_path: noval.Counter, init_args: {{log_as: {log_as}}}}}
        data: {{class_path: noval.Tokens}}
        quality: {{metric: train_loss, mode: min}}
        train: {{epochs: 2}}
        energy: {{idle_seconds: 0, warmup_steps: 1}}
        """)
    record = only_point(sweep).record
    assert record["status"] == status, record["reason"]
    if status == "ok":
        assert record["quality"]["source"] == "training"
        assert [p["epoch"] for p in record["quality_curve"]] == [1, 2]
        assert record["quality"]["final"]["train_loss"] > 0
    else:
        assert record["reason"].startswith(says), record["reason"]


DICT_LOADERS = DATA.replace(
    "        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)",
    "        return {'a': DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True),\n"
    "                'b': DataLoader(self.train_set, batch_size=8)}") + '''

class TwoStreams(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(12, 4)

    def training_step(self, batch, batch_idx):
        loss = sum(self.embed(part[0]).square().mean() for part in batch.values())
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_size", float(len(batch[0])))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
'''


@pytest.mark.parametrize("fraction, items", [(1.0, 128), (0.5, 64)])
def test_a_dict_of_training_loaders_is_passed_through_and_each_is_reduced(
        in_tmp: Path, fraction: float, items: int) -> None:
    sweep = project(in_tmp, "streams", DICT_LOADERS, f"""\
        name: streams
        model: {{class_path: streams.TwoStreams}}
        data: {{class_path: streams.Tokens}}
        quality: {{metric: val_size, mode: max}}
        data_fraction: {fraction}
        train: {{epochs: 1}}
        energy: {{idle_seconds: 0, warmup_steps: 1}}
        """)
    record = only_point(sweep).record
    assert record["status"] == "ok", record["reason"]
    assert record["data"]["train_items"] == items  # both loaders, 64 items each at 1.0
    assert record["data"]["subset"] == ("all" if fraction == 1 else "random")


PER_STEP_VALIDATION = DATA + '''

class StepLogger(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(12, 4)

    def training_step(self, batch, batch_idx):
        return self.embed(batch[0]).square().mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.embed(batch[0]).square().mean(), on_step=True,
                 on_epoch=False)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
'''


def test_a_validation_metric_logged_per_step_only_is_named_in_the_reason(in_tmp: Path) -> None:
    sweep = project(in_tmp, "stepval", PER_STEP_VALIDATION, """\
        name: stepval
        model: {class_path: stepval.StepLogger}
        data: {class_path: stepval.Tokens}
        quality: {metric: val_loss, mode: min}
        train: {epochs: 1}
        energy: {idle_seconds: 0, warmup_steps: 1}
        """)
    record = only_point(sweep).record
    assert record["status"] == "failed"
    assert record["reason"].startswith(
        "quality.metric 'val_loss' was logged in validation per step only; log it per epoch "
        "too"), record["reason"]


IMAGES = '''
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class Stripes(pl.LightningDataModule):
    """8x8 one-channel images in [-1, 1], one stripe pattern per class, with their labels."""

    def setup(self, stage):
        generator = torch.Generator().manual_seed(5)
        labels = torch.arange(256) % 4
        rows = torch.arange(8).view(8, 1).expand(8, 8)
        patterns = torch.stack([(rows % (k + 2) == 0).float() for k in range(4)]) * 2 - 1
        noise = 0.2 * torch.randn(256, 1, 8, 8, generator=generator)
        images = (patterns[labels].unsqueeze(1) + noise).clamp(-1, 1)
        self.train_set = TensorDataset(images[:192], labels[:192])
        self.val_set = TensorDataset(images[192:], labels[192:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=32, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=64)


class Painter(pl.LightningModule):
    """Samples images, and logs a classification recall of its own as `recall`."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh())

    def sample(self, n):
        return self.net(torch.randn(n, 4, device=self.device)).view(n, 1, 8, 8)

    def training_step(self, batch, batch_idx):
        return (self.sample(len(batch[0])) - batch[0]).square().mean()

    def validation_step(self, batch, batch_idx):
        self.log("recall", 0.123)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)
'''


def test_a_logged_metric_named_like_a_greenbench_score_is_never_overwritten(
        in_tmp: Path) -> None:
    from greenbench import results
    from greenbench.report import builder, tables

    sweep = project(in_tmp, "painter", IMAGES, """\
        name: painter
        model: {class_path: painter.Painter}
        data: {class_path: painter.Stripes}
        quality: {metric: recall}
        train: {epochs: 1}
        eval: {num_samples: 64}
        energy: {idle_seconds: 0, warmup_steps: 1}
        generate: {num_images: 0}
        """)
    record = only_point(sweep).record
    assert record["status"] == "ok", record["reason"]
    final = record["quality"]["final"]
    assert final["recall"] == pytest.approx(0.123)  # the module's own, as it logged it
    assert 0 <= final["sample_recall"] <= 1 and "kid" in final  # greenbench's, apart

    frame = results.frame([record]).iloc[0]
    assert frame["recall"] == pytest.approx(0.123) and frame["quality_column"] == "recall"
    assert frame["sample_recall"] == pytest.approx(final["sample_recall"])
    table = builder.quality_table(tables.summarise(results.frame([record])))
    assert table.loc[0, "recall"].startswith("0.123")


def test_a_changed_helper_module_of_a_re_exported_class_is_named_on_resume(
        in_tmp: Path) -> None:
    from greenbench.sweep.runner import changed_sources

    # a package name no other test imports: this process may hold examples' mypkg already
    package = in_tmp / "reexports"
    package.mkdir()
    (package / "__init__.py").write_text("from reexports.models import Net\n")
    (package / "helpers.py").write_text("import torch\n\n\ndef layer():\n"
                                        "    return torch.nn.Linear(4, 2)\n")
    (package / "models.py").write_text(
        "import lightning.pytorch as pl\n\nfrom reexports.helpers import layer\n\n\n"
        "class Net(pl.LightningModule):\n    def __init__(self):\n        super().__init__()\n"
        "        self.layer = layer()\n")
    (in_tmp / "sweep.yaml").write_text(
        "name: re\nmodel: {class_path: reexports.Net}\nquality: {metric: val_loss, mode: min}\n")
    sweep = load_sweep(in_tmp / "sweep.yaml")
    with plugins.importable_from(in_tmp):
        net = plugins.import_class("reexports.Net", "model.class_path")
    recorded = {"r": {"config": {"model": "reexports.Net"},
                      "model": {"class_path": "reexports.models.Net",
                                "source_sha256": plugins.source_sha256(net)}}}
    assert changed_sources(sweep, recorded) == []
    (package / "helpers.py").write_text((package / "helpers.py").read_text() + "# edited\n")
    (line,) = changed_sources(sweep, recorded)
    assert line.startswith("the source of reexports.Net changed since 1 recorded point(s) ran")
