"""The type head: its kinds, config and checkpoints with and without it, the masked loss, learning types,
type acquisition."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mlcore.acquisition import STRATEGY_NAMES, parse_strategy, rank_pool, select_batch, type_entropy
from mlcore.checkpoint import _state_sha256, load_checkpoint, save_checkpoint
from mlcore.data import TripletArrayDataset
from mlcore.metrics import type_confusion_matrix, type_metrics
from mlcore.models import TYPE_HEADS, VGG6, ModelConfig, transfer_weights
from mlcore.score import score
from mlcore.train import TrainConfig, masked_type_loss, train_classifier

TYPES = ("cosmic_ray", "satellite_streak", "hot_pixel")
TINY = {"input_size": 16, "input_scale": 16.0, "conv_filters": (4, 8), "dense_units": 16}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(types=TYPES, seed=0):
    torch.manual_seed(seed)
    return VGG6(ModelConfig(**TINY, type_classes=types)).eval()


def test_config_round_trip_and_validation():
    config = ModelConfig(**TINY, type_classes=list(TYPES))
    assert config.type_classes == TYPES and config.has_type_head
    data = config.to_dict()
    assert data["type_classes"] == list(TYPES)
    assert ModelConfig.from_dict(data) == config
    # A config saved before the head existed has no such key: no head.
    data.pop("type_classes")
    old = ModelConfig.from_dict(data)
    assert old.type_classes == () and not old.has_type_head
    with pytest.raises(ValueError, match="type_classes"):
        ModelConfig(type_classes=("ghost",))
    with pytest.raises(ValueError, match="type_classes"):
        ModelConfig(type_classes=("ghost", "ghost"))


def test_the_kind_of_head_round_trips_and_old_configs_keep_a_linear_one():
    config = ModelConfig(**TINY, type_classes=TYPES)
    assert config.type_head == "branch"  # the default for new models
    for kind in TYPE_HEADS:
        chosen = ModelConfig(**TINY, type_classes=TYPES, type_head=kind, type_units=24)
        assert ModelConfig.from_dict(chosen.to_dict()) == chosen
    # A config saved before the choice existed had a linear head, and loads with one.
    data = config.to_dict()
    data.pop("type_head")
    assert ModelConfig.from_dict(data).type_head == "linear"
    with pytest.raises(ValueError, match="type_head"):
        ModelConfig(type_head="transformer")
    with pytest.raises(ValueError, match="type_units"):
        ModelConfig(type_units=0)


@pytest.mark.parametrize("kind", TYPE_HEADS)
def test_without_a_head_the_network_is_exactly_the_old_one(kind):
    torch.manual_seed(3)
    plain = VGG6(ModelConfig(**TINY))
    torch.manual_seed(3)
    headed = VGG6(ModelConfig(**TINY, type_classes=TYPES, type_head=kind))
    assert plain.type_out is None and "type_out.weight" not in plain.state_dict()
    assert not any(k.startswith("type_") for k in plain.state_dict())
    shared = {k: v for k, v in headed.state_dict().items() if not k.startswith("type_")}
    assert shared.keys() == plain.state_dict().keys()
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(shared[name], tensor)  # same initial draws for the shared layers
    x = torch.randn(5, 3, 16, 16)
    headed.eval()
    logits, type_logits = headed.forward_with_types(x)
    torch.testing.assert_close(logits, headed(x))
    # Scaling the gradient the head sends back changes no value.
    torch.testing.assert_close(headed.forward_with_types(x, 0.3)[1], type_logits)
    assert type_logits.shape == (5, 3)
    # The scoring pass gives the same values.
    h, scored_types = headed.embed_and_types(x)
    torch.testing.assert_close(h, headed.embed(headed.features(x)))
    torch.testing.assert_close(scored_types, type_logits)
    assert plain.eval().forward_with_types(x)[1] is None and plain.embed_and_types(x)[1] is None
    with pytest.raises(ValueError, match="no type head"):
        plain.type_logits(torch.zeros(1, 16))
    if kind in ("branch", "shared_stem"):
        with pytest.raises(ValueError, match="embed_and_types"):
            headed.type_logits(h)
    else:
        torch.testing.assert_close(headed.type_logits(h), type_logits)


def _resaved_without(model, *keys) -> bytes:
    """The model's checkpoint as it was written before `keys` of its model_config existed."""
    buffer = io.BytesIO()
    save_checkpoint(buffer, model)
    payload = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    for key in keys:
        payload["model_config"].pop(key)
    payload["state_sha256"] = _state_sha256(payload)
    old = io.BytesIO()
    torch.save(payload, old)
    return old.getvalue()


def test_checkpoints_keep_the_head_and_old_checkpoints_load_without_one():
    model = _model()
    buffer = io.BytesIO()
    save_checkpoint(buffer, model)
    loaded = load_checkpoint(buffer.getvalue(), device="cpu")
    assert loaded.config.type_classes == TYPES and loaded.config.type_head == "branch"
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor)
    x = np.random.default_rng(0).normal(0, 0.05, (4, 3, 16, 16)).astype(np.float32)
    data = TripletArrayDataset(x, preprocessed=True)
    np.testing.assert_array_equal(score(loaded.model, data).type_probs, score(model, data).type_probs)

    # A checkpoint with a head from before the kind of head was saved: a linear head, as it was.
    torch.manual_seed(0)
    linear = VGG6(ModelConfig(**TINY, type_classes=TYPES, type_head="linear")).eval()
    loaded = load_checkpoint(_resaved_without(linear, "type_head", "type_units"), device="cpu")
    assert loaded.config.type_head == "linear" and loaded.model.type_stem is None
    torch.testing.assert_close(loaded.model.type_out.weight, linear.type_out.weight)

    # A checkpoint written before the head existed: its model_config has no type_classes key.
    plain = VGG6(ModelConfig(**TINY)).eval()
    loaded = load_checkpoint(_resaved_without(plain, "type_classes", "type_head", "type_units"), device="cpu")
    assert loaded.config.type_classes == () and loaded.model.type_out is None
    result = score(loaded.model, TripletArrayDataset(np.zeros((2, 3, 16, 16), np.float32), preprocessed=True))
    assert result.type_probs is None and result.type_classes == ()


def test_transfer_copies_the_head_only_for_the_same_types():
    torch.manual_seed(1)
    source = VGG6(ModelConfig(**TINY, type_classes=TYPES, type_head="branch")).eval()
    same, report = transfer_weights(source, source.config)
    assert "type_out.weight" in report["copied"] and "type_stem.0.weight" in report["copied"]
    torch.testing.assert_close(same.type_out.weight, source.type_out.weight)
    other = ModelConfig(
        **TINY, type_classes=("satellite_streak", "cosmic_ray", "hot_pixel"), type_head="branch"
    )
    moved, report = transfer_weights(source, other)
    assert "type_out.weight" in report["fresh"] and "fc.weight" in report["copied"]
    # The branch's own layers do not depend on the types: kept.
    assert {"type_stem.0.weight", "type_conv.0.weight", "type_fc.weight"} <= set(report["copied"])
    assert not torch.equal(moved.type_out.weight, source.type_out.weight)
    # Another kind of head reads other inputs: all of it starts fresh.
    for kind in ("linear", "shared_stem"):
        moved, report = transfer_weights(source, ModelConfig(**TINY, type_classes=TYPES, type_head=kind))
        assert set(report["fresh"]) == {k for k in moved.state_dict() if k.startswith("type_")}
    # From a model without a head: every shared layer copied, the new head fresh.
    plain = VGG6(ModelConfig(**TINY))
    grown, report = transfer_weights(plain, source.config)
    assert set(report["fresh"]) == {k for k in grown.state_dict() if k.startswith("type_")}
    assert all(not k.startswith("type_") for k in report["copied"])
    # An extra input channel: the branch's first convolution is adapted like the shared one.
    wider = ModelConfig(**TINY, type_classes=TYPES, type_head="branch", in_channels=4)
    widened, report = transfer_weights(source, wider)
    assert {"conv.0.weight", "type_stem.0.weight"} <= set(report["adapted"])
    torch.testing.assert_close(widened.type_stem[0].weight[:, :3], source.type_stem[0].weight)
    assert torch.all(widened.type_stem[0].weight[:, 3] == 0)


def test_masked_loss_ignores_items_without_a_type():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    targets = torch.tensor([0, -1, 2, -1, 1, -1])
    loss = masked_type_loss(logits, targets)
    typed = targets >= 0
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[typed], targets[typed]))
    loss.backward()
    assert torch.all(logits.grad[~typed] == 0) and torch.any(logits.grad[typed] != 0)
    # Changing untyped rows changes nothing.
    moved = logits.detach().clone()
    moved[~typed] += 100.0
    torch.testing.assert_close(masked_type_loss(moved, targets), loss.detach())
    empty = masked_type_loss(logits, torch.full((6,), -1))
    assert float(empty.detach()) == 0.0 and torch.isfinite(empty)


def _typed_stamps(n, seed):
    """16×16 noise triplets; bogus ones carry one of three easy patterns (a spike, a line, a blob),
    real ones a soft point source. Type index -1 for the reals."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.02, size=(n, 3, 16, 16)).astype(np.float32)
    real = np.arange(n) % 4 == 0
    types = np.where(real, -1, rng.integers(0, 3, n))
    yy, xx = np.mgrid[:16, :16]
    blob = np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 4.0)
    for i in range(n):
        if real[i]:
            x[i, [0, 2]] += 0.3 * blob
        elif types[i] == 0:
            x[i, 2, 8, 8] += 1.0
        elif types[i] == 1:
            x[i, 2, rng.integers(4, 12), :] += 0.4
        else:
            x[i, 2] += 0.3 * np.roll(blob, (rng.integers(-3, 4), rng.integers(-3, 4)), axis=(0, 1)) * -1
    return x, real.astype(np.float64), types


def test_a_few_steps_learn_types_better_than_chance():
    # A fully shared linear head: the tiny network's real/bogus features alone do not tell these
    # patterns apart (how the heads compare on real-sized data: bench/type_head.py).
    x, y, types = _typed_stamps(160, seed=0)
    # A third of the bogus items have no type: they still train real/bogus.
    hidden = (types >= 0) & (np.arange(len(types)) % 3 == 1)
    given_types = np.where(hidden, -1, types)
    config = TrainConfig(
        epochs=12,
        batch_size=16,
        learning_rate=3e-3,
        seed=0,
        val_fraction=0.2,
        type_loss_weight=1.0,
        type_shared_gradient=1.0,
    )
    result = train_classifier(
        TripletArrayDataset(x, preprocessed=True),
        y,
        model_config=ModelConfig(**TINY, type_classes=TYPES, type_head="linear"),
        train_config=config,
        type_targets=given_types,
    )
    assert result.best.val_type_accuracy is not None
    x_test, y_test, t_test = _typed_stamps(90, seed=1)
    scored = score(result.model, TripletArrayDataset(x_test, preprocessed=True))
    assert scored.type_classes == TYPES and scored.type_probs.shape == (90, 3)
    np.testing.assert_allclose(scored.type_probs.sum(axis=1), 1.0, atol=1e-5)
    found = type_metrics(t_test, scored.type_probs, TYPES)
    assert found["n"] == int((t_test >= 0).sum())
    assert found["accuracy"] > 0.6  # chance is 1/3


@pytest.mark.parametrize("kind", [None, "shared_stem"])
def test_the_convolutional_heads_learn_types_better_than_chance(kind):
    # Detached (the default): the type loss trains only the branch's own layers. None = the default.
    x, y, types = _typed_stamps(160, seed=0)
    config = TrainConfig(epochs=12, batch_size=16, learning_rate=3e-3, seed=0, val_fraction=0.2)
    result = train_classifier(
        TripletArrayDataset(x, preprocessed=True),
        y,
        model_config=ModelConfig(**TINY, type_classes=TYPES, **({"type_head": kind} if kind else {})),
        train_config=config,
        type_targets=types,
    )
    assert result.model.config.type_head == (kind or "branch")
    x_test, _, t_test = _typed_stamps(90, seed=1)
    scored = score(result.model, TripletArrayDataset(x_test, preprocessed=True))
    assert type_metrics(t_test, scored.type_probs, TYPES)["accuracy"] > 0.6  # chance is 1/3


@pytest.fixture(scope="module")
def _real_bogus_weights():
    """Trained weights of the real/bogus layers (type_* left out), by (head kind or None, shared gradient)."""
    x, y, types = _typed_stamps(64, seed=3)
    data = TripletArrayDataset(x, preprocessed=True)
    cache = {}

    def weights(kind: str | None, shared_gradient: float = 0.0) -> dict:
        if (kind, shared_gradient) not in cache:
            config = ModelConfig(**TINY, type_classes=TYPES if kind else (), type_head=kind or "linear")
            quick = TrainConfig(epochs=2, batch_size=16, seed=0, type_shared_gradient=shared_gradient)
            result = train_classifier(
                data, y, model_config=config, train_config=quick, type_targets=types if kind else None
            )
            state = result.model.state_dict()
            cache[kind, shared_gradient] = {k: v for k, v in state.items() if not k.startswith("type_")}
        return cache[kind, shared_gradient]

    return weights


@pytest.mark.parametrize("kind", TYPE_HEADS)
def test_a_detached_head_trains_real_bogus_exactly_as_without_a_head(_real_bogus_weights, kind):
    plain = _real_bogus_weights(None)
    detached = _real_bogus_weights(kind)
    assert detached.keys() == plain.keys()
    assert all(torch.equal(plain[k], detached[k]) for k in plain)  # same initial weights, masks, updates


def test_a_shared_head_moves_the_real_bogus_weights(_real_bogus_weights):
    plain = _real_bogus_weights(None)
    for kind in ("linear", "shared_stem"):
        shared = _real_bogus_weights(kind, 1.0)
        assert not all(torch.equal(plain[k], shared[k]) for k in plain)  # a shared head moves the features
    # The branch reads the input, not the shared layers: no gradient of its reaches them.
    branch = _real_bogus_weights("branch", 1.0)
    assert all(torch.equal(plain[k], branch[k]) for k in plain)


def test_type_labels_are_checked():
    x, y, types = _typed_stamps(16, seed=2)
    data = TripletArrayDataset(x, preprocessed=True)
    quick = TrainConfig(epochs=1, batch_size=8, val_fraction=0.0)
    with pytest.raises(ValueError, match="type head"):
        train_classifier(data, y, model_config=ModelConfig(**TINY), train_config=quick, type_targets=types)
    headed = ModelConfig(**TINY, type_classes=TYPES)
    with pytest.raises(ValueError, match=r"-1\.\.2"):
        train_classifier(data, y, model_config=headed, train_config=quick, type_targets=types + 5)
    with pytest.raises(ValueError, match="type labels"):
        train_classifier(data, y, model_config=headed, train_config=quick, type_targets=types[:3])
    with pytest.raises(ValueError, match="type_loss_weight"):
        TrainConfig(type_loss_weight=-1.0)
    with pytest.raises(ValueError, match="type_shared_gradient"):
        TrainConfig(type_shared_gradient=1.5)


def test_type_metrics_count_only_typed_items():
    matrix = type_confusion_matrix([0, 0, 1, 2], [0, 1, 1, 2], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    found = type_metrics([0, 0, -1, 2], probs, ["a", "b", "c"])
    assert found["n"] == 3 and found["classes"] == ["a", "b", "c"]
    assert found["matrix"] == [[1, 1, 0], [0, 0, 0], [1, 0, 0]]
    assert found["accuracy"] == pytest.approx(1 / 3)
    assert found["per_class_recall"] == [0.5, None, 0.0]
    assert type_metrics([-1], probs[:1], ["a", "b", "c"])["accuracy"] is None


def test_type_entropy_ranks_unsure_bogus_first():
    probs = np.array([[1 / 3, 1 / 3, 1 / 3], [0.98, 0.01, 0.01], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    plain = type_entropy(probs)
    assert plain.scores[0] == pytest.approx(1.0) and plain.indices[-1] == 1
    # The same uncertainty on a subject the model calls real counts for little.
    weighted = type_entropy(probs, p_real=np.array([0.95, 0.0, 0.0, 0.0]))
    assert weighted.indices.tolist()[0] == 3 and weighted.indices.tolist()[-1] in (0, 1)
    assert weighted.scores[0] == pytest.approx(1.0)
    order, scores = rank_pool("type_entropy", np.array([0.95, 0.0, 0.0, 0.0]), type_probs=probs)
    assert order.tolist() == weighted.indices.tolist()
    assert "type_entropy" in STRATEGY_NAMES and "type_entropy+diversity" in STRATEGY_NAMES
    assert parse_strategy("Type_Entropy+diversity") == ("type_entropy", True)
    with pytest.raises(ValueError, match="type head"):
        rank_pool("type_entropy", np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="disagree"):
        rank_pool("type_entropy", np.array([0.5, 0.5]), type_probs=probs)
    picked = select_batch("type_entropy", 2, p_real=np.array([0.95, 0.0, 0.0, 0.0]), type_probs=probs)
    assert picked.indices.tolist() == weighted.indices.tolist()[:2]


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(2, 6)), elements=st.floats(0.0, 1.0)),
    st.floats(0.0, 1.0),
)
def test_type_entropy_is_bounded_and_scaled_by_p_bogus(raw, p):
    raw = raw + 1e-3
    probs = raw / raw.sum(axis=1, keepdims=True)
    plain = type_entropy(probs)
    assert np.all((plain.scores >= 0) & (plain.scores <= 1 + 1e-9))
    assert sorted(plain.indices.tolist()) == list(range(len(probs)))
    weighted = type_entropy(probs, p_real=np.full(len(probs), p))
    by_item = np.empty(len(probs))
    by_item[weighted.indices] = weighted.scores
    plain_by_item = np.empty(len(probs))
    plain_by_item[plain.indices] = plain.scores
    np.testing.assert_allclose(by_item, plain_by_item * (1 - p), atol=1e-12)
