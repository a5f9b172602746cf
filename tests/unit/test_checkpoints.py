import pytest
import torch

from companion.checkpoints import CheckpointStore, config_key, train_or_load


def _setup(seed=0):
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))  # the data set: fixed
    torch.manual_seed(seed)  # initial weights and the training RNG stream
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def epoch(_e):
        idx = torch.randint(0, 64, (16,))  # uses the torch RNG: resume must restore it
        loss = ((model(x[idx]) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    return model, opt, epoch


CFG = {"lr": 0.05, "epochs": 12}


def test_train_then_load(tmp_path):
    store = CheckpointStore("toy", root=tmp_path)
    model, opt, epoch = _setup()
    st = train_or_load(store, "lin", CFG, model, opt, epoch, epochs=12, progress=False)
    assert st.source == "trained" and len(st.history) == 12 and st.path.exists()
    model2, opt2, _ = _setup(seed=99)

    def boom(_e):
        raise AssertionError("must not train when a checkpoint exists")

    st2 = train_or_load(store, "lin", CFG, model2, opt2, boom, epochs=12, progress=False)
    assert st2.source == "loaded"
    assert torch.equal(model2.weight, model.weight)
    # another configuration is another key: trains anew
    assert config_key({**CFG, "lr": 0.01}) != config_key(CFG)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    ref_model, ref_opt, ref_epoch = _setup()
    train_or_load(CheckpointStore("toy", root=tmp_path / "a"), "lin", CFG, ref_model, ref_opt, ref_epoch,
                  epochs=12, progress=False)

    store = CheckpointStore("toy", root=tmp_path / "b")
    model, opt, epoch = _setup()

    def dies_at_7(e):
        if e == 7:
            raise KeyboardInterrupt  # the run is killed during epoch 7
        return epoch(e)

    with pytest.raises(KeyboardInterrupt):
        train_or_load(store, "lin", CFG, model, opt, dies_at_7, epochs=12, progress=False)
    assert store.path("lin", CFG, partial=True).exists() and not store.path("lin", CFG).exists()
    model, opt, epoch = _setup(seed=5)  # a fresh process: different initial weights and RNG
    st = train_or_load(store, "lin", CFG, model, opt, epoch, epochs=12, progress=False)
    assert st.source == "resumed" and [h["epoch"] for h in st.history] == list(range(12))
    assert torch.allclose(model.weight, ref_model.weight, atol=0, rtol=0)
    assert not store.path("lin", CFG, partial=True).exists()


def test_corrupt_checkpoint_is_set_aside(tmp_path):
    store = CheckpointStore("toy", root=tmp_path)
    p = store.path("lin", CFG)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"not a checkpoint")
    model, opt, epoch = _setup()
    st = train_or_load(store, "lin", CFG, model, opt, epoch, epochs=2, progress=False)
    assert st.source == "trained" and p.with_suffix(".pt.corrupt").exists()
