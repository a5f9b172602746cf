"""Parity of companion.sparse with dense PyTorch: values and gradients, random and clustered coordinates, 1 and 2
threads."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from companion.data.vessels import generate_tree
from companion.sparse import (SparseDownsample, SparseGroupNorm, SparseTensor, SparseUpsample, SparseWindowAttention,
                              SubMConv3d, dense_weight, from_dense, from_masks, masks_of, to_dense, window_partition)
from companion.sparse import backend
from companion.sparse.kmap import submanifold_table

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


def _random_coords(grid=16, n=500, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.cat([torch.randint(0, batch, (n, 1), generator=g), torch.randint(0, grid, (n, 3), generator=g)], 1)
    return torch.unique(c, dim=0), (grid,) * 3, batch


def _clustered_coords(grid=24, seed=0):
    # two small vessel trees: thin tubes, the clustered pattern the model sees
    masks = [generate_tree(kind, grid=32, seed=seed + i).volume[:grid, :grid, :grid] for i, kind in
             enumerate(["airway", "cerebral"])]
    st = from_masks(masks)
    return st.coords, (grid,) * 3, 2


COORDS = {"random": _random_coords, "clustered": _clustered_coords}


def _tensor(kind, channels=3, stride=1, seed=1):
    coords, shape, batch = COORDS[kind]()
    if stride > 1:
        coords = coords.clone()
        coords[:, 1:] = coords[:, 1:] // stride * stride
        coords = torch.unique(coords, dim=0)
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(coords), channels, generator=g, requires_grad=True)
    return SparseTensor(coords, feats, stride, shape, batch)


def _at(dense, coords, stride=1):
    """Dense (B, C, ...) values at sparse coordinates -> (N, C)."""
    c = coords
    return dense[c[:, 0], :, c[:, 1] // stride, c[:, 2] // stride, c[:, 3] // stride]


@pytest.mark.parametrize("kind", list(COORDS))
def test_submanifold_conv_matches_dense_conv3d(kind, threads):
    torch.manual_seed(0)
    x = _tensor(kind)
    conv = SubMConv3d(3, 4, 3)
    y = conv(x)
    xd = to_dense(x).detach().requires_grad_(True)
    wd = dense_weight(conv.weight, 3).detach().requires_grad_(True)
    bd = conv.bias.detach().clone().requires_grad_(True)
    yd = _at(F.conv3d(xd, wd, bd, padding=1), x.coords)
    torch.testing.assert_close(y.feats, yd, **TOL)
    g = torch.randn_like(yd)
    (y.feats * g).sum().backward()
    (yd * g).sum().backward()
    torch.testing.assert_close(x.feats.grad, _at(xd.grad, x.coords), **TOL)
    torch.testing.assert_close(dense_weight(conv.weight.grad, 3), wd.grad, **TOL)
    torch.testing.assert_close(conv.bias.grad, bd.grad, **TOL)


@pytest.mark.parametrize("kind", list(COORDS))
@pytest.mark.parametrize("stride", [1, 2])
def test_stride2_conv_matches_dense_conv3d(kind, stride, threads):
    torch.manual_seed(0)
    x = _tensor(kind, stride=stride)
    down = SparseDownsample(3, 5)
    y = down(x)
    assert y.stride == 2 * stride
    xd = to_dense(x).detach().requires_grad_(True)
    wd = dense_weight(down.weight, 2).detach().requires_grad_(True)
    full = F.conv3d(xd, wd, None, stride=2)
    # every output voxel of the dense conv that sees an active input is an output of the sparse conv
    support = F.max_pool3d((to_dense(x).abs().sum(1, keepdim=True) > 0).float(), 2)[:, 0] > 0
    assert support.sum().item() == y.n
    yd = _at(full, y.coords, y.stride) + down.bias
    torch.testing.assert_close(y.feats, yd, **TOL)
    g = torch.randn_like(yd)
    (y.feats * g).sum().backward()
    (yd * g).sum().backward()
    torch.testing.assert_close(x.feats.grad, _at(xd.grad, x.coords, stride), **TOL)
    torch.testing.assert_close(dense_weight(down.weight.grad, 2), wd.grad, **TOL)


@pytest.mark.parametrize("kind", list(COORDS))
def test_transposed_conv_matches_dense_conv_transpose3d(kind, threads):
    torch.manual_seed(0)
    x = _tensor(kind, stride=2)
    up = SparseUpsample(3, 4, mode="transposed")
    y = up(x)
    assert y.stride == 1 and y.n == 8 * x.n  # every voxel creates its 8 children
    xd = to_dense(x).detach().requires_grad_(True)
    wd = dense_weight(up.weight, 2, transposed=True).detach().requires_grad_(True)
    full = F.conv_transpose3d(xd, wd, None, stride=2)
    yd = _at(full, y.coords) + up.bias
    torch.testing.assert_close(y.feats, yd, **TOL)
    # outside the children the dense result is exactly zero (no parent)
    assert torch.equal(full.detach().abs().sum(1) > 0, (to_dense(y.replace_feats(torch.ones(y.n, 1)))[:, 0] > 0)
                       & (full.detach().abs().sum(1) > 0))
    g = torch.randn_like(yd)
    (y.feats * g).sum().backward()
    (yd * g).sum().backward()
    torch.testing.assert_close(x.feats.grad, _at(xd.grad, x.coords, 2), **TOL)
    torch.testing.assert_close(dense_weight(up.weight.grad, 2, transposed=True), wd.grad, **TOL)


def test_subdivision_matches_nearest_upsampling():
    x = _tensor("clustered", stride=2)
    y = SparseUpsample(3, 3, mode="subdivide")(x)
    near = F.interpolate(to_dense(x).detach(), scale_factor=2, mode="nearest")
    torch.testing.assert_close(y.feats.detach(), _at(near, y.coords), **TOL)


@pytest.mark.parametrize("kind", list(COORDS))
def test_group_norm_matches_per_sample_group_norm(kind, threads):
    x = _tensor(kind, channels=8)
    gn = SparseGroupNorm(4, 8)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    y = gn(x).feats
    for b in range(x.batch_size):
        sel = x.coords[:, 0] == b
        ref = F.group_norm(x.feats[sel].T[None], 4, gn.weight, gn.bias, gn.eps)[0].T
        torch.testing.assert_close(y[sel], ref, **TOL)
    y.sum().backward()  # differentiable
    assert torch.isfinite(x.feats.grad).all()
    # voxels in any order (the index_add path) give the same result
    perm = torch.randperm(x.n, generator=torch.Generator().manual_seed(0))
    xp = SparseTensor(x.coords[perm], x.feats.detach()[perm], x.stride, x.spatial_shape, x.batch_size)
    torch.testing.assert_close(gn(xp).feats, y.detach()[perm], **TOL)


def _naive_window_attention(att, x):
    """Reference: loop over windows, plain softmax attention per head."""
    c, h = att.channels, att.heads
    d = c // h
    g = torch.div(x.coords[:, 1:], x.stride, rounding_mode="floor") + (att.window // 2 if att.shift else 0)
    w = torch.div(g, att.window, rounding_mode="floor")
    key = torch.cat([x.coords[:, :1], w], 1)
    out = torch.zeros_like(x.feats)
    qkv = att.qkv(x.feats)
    for k in torch.unique(key, dim=0):
        idx = torch.nonzero((key == k).all(1))[:, 0]
        q, kk, v = qkv[idx].view(len(idx), 3, h, d).unbind(1)
        a = torch.softmax(torch.einsum("ihd,jhd->hij", q, kk) / d ** 0.5, dim=-1)
        out[idx] = torch.einsum("hij,jhd->ihd", a, v).reshape(len(idx), c)
    return att.proj(out)


@pytest.mark.parametrize("shift", [False, True])
def test_window_attention_matches_naive_reference(shift, threads):
    torch.manual_seed(0)
    x = _tensor("random", channels=8, stride=2)
    att = SparseWindowAttention(8, 2, window=3, shift=shift)
    torch.testing.assert_close(att(x).feats, _naive_window_attention(att, x), **TOL)


def test_window_attention_is_local_shifted_and_order_free():
    torch.manual_seed(0)
    x = _tensor("random", channels=8)
    a0 = SparseWindowAttention(8, 2, window=4, shift=False)
    a1 = SparseWindowAttention(8, 2, window=4, shift=True)
    a1.load_state_dict(a0.state_dict())
    assert not torch.allclose(a0(x).feats, a1(x).feats)  # shifting changes which voxels meet
    # permuting the voxels permutes the output
    perm = torch.randperm(x.n)
    xp = SparseTensor(x.coords[perm], x.feats[perm], x.stride, x.spatial_shape, x.batch_size)
    torch.testing.assert_close(a0(xp).feats, a0(x).feats[perm], **TOL)
    # a voxel's output depends only on voxels of its window: change a feature elsewhere, it stays put
    order, wid, slot, _ = window_partition(x.coords, 1, 4, False)
    win = torch.empty_like(wid)
    win[order] = wid
    other = torch.nonzero(win != win[0])[0, 0]
    f2 = x.feats.detach().clone()
    f2[other] += 10
    y1, y2 = a0(x).feats, a0(x.replace_feats(f2)).feats
    torch.testing.assert_close(y1[0], y2[0], **TOL)
    # windows never mix samples of the batch
    assert all(len(torch.unique(x.coords[order][wid == w, 0])) == 1 for w in torch.unique(wid))


def test_dense_sparse_round_trip_and_kernel_map_cache():
    rng = np.random.default_rng(0)
    masks = [rng.random((10, 11, 12)) < 0.05 for _ in range(3)]
    st = from_masks(masks)
    assert st.n == sum(int(m.sum()) for m in masks)
    back = masks_of(st)
    assert all(np.array_equal(a, b) for a, b in zip(masks, back))
    dense = torch.as_tensor(np.stack(masks)).float()
    st2 = from_dense(dense, feats="ones")
    assert torch.equal(st2.coords, st.coords)
    torch.testing.assert_close(to_dense(st2)[:, 0], dense)
    t1 = submanifold_table(st)
    assert submanifold_table(st.replace_feats(st.feats * 2)) is t1  # one table per coordinate set
    assert t1.shape == (st.n, 27) and (t1[:, 13] == torch.arange(st.n)).all()  # centre offset = the voxel itself


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        SparseTensor(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="odd kernel"):
        SubMConv3d(1, 1, 2)
    with pytest.raises(ValueError, match="one shape"):
        from_masks([np.zeros((4, 4, 4)), np.zeros((4, 4, 5))])
    with pytest.raises(ValueError, match="stride"):
        SparseUpsample(1, 1)(SparseTensor(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 1), 1, (4, 4, 4)))


def test_backend_switch(monkeypatch):
    monkeypatch.setenv("COMPANION_SPARSE_BACKEND", "torch")
    assert backend.use_torchsparse() is False
    monkeypatch.setenv("COMPANION_SPARSE_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="COMPANION_SPARSE_BACKEND"):
        backend.use_torchsparse()
    if not backend.torchsparse_available():
        monkeypatch.setenv("COMPANION_SPARSE_BACKEND", "torchsparse")
        with pytest.raises(RuntimeError, match="not importable"):
            backend.use_torchsparse()


@pytest.mark.skipif(not (backend.torchsparse_available() and torch.cuda.is_available()),
                    reason="torchsparse (CUDA) not installed here")
def test_torchsparse_parity(monkeypatch):
    x = _tensor("clustered").to("cuda")
    conv = SubMConv3d(3, 4).cuda()
    monkeypatch.setenv("COMPANION_SPARSE_BACKEND", "torch")
    ref = conv(x).feats
    monkeypatch.setenv("COMPANION_SPARSE_BACKEND", "torchsparse")
    torch.testing.assert_close(conv(x).feats, ref, atol=1e-4, rtol=1e-4)


def test_empty_tensors_pass_through_every_layer():
    x = SparseTensor(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4), 2, (8, 8, 8), 1)
    assert SubMConv3d(4, 4)(x).n == 0
    assert SparseDownsample(4, 4)(x).n == 0
    assert SparseUpsample(4, 4)(x).n == 0
    assert SparseGroupNorm(2, 4)(x).n == 0
    assert SparseWindowAttention(4, 2, 2)(x).n == 0
    assert not masks_of(SparseUpsample(4, 4)(x))[0].any()


def test_chunked_gather_gemm_equals_one_shot(monkeypatch):
    from companion.sparse import conv

    x = _tensor("clustered", channels=5)
    layer = SubMConv3d(5, 3)
    ref = layer(x).feats
    g = torch.randn_like(ref)
    (ref * g).sum().backward()
    ref_gx, ref_gw = x.feats.grad.clone(), layer.weight.grad.clone()
    x.feats.grad, layer.weight.grad = None, None
    monkeypatch.setattr(conv, "CHUNK_ELEMENTS", 27 * 5 * 7)  # chunks of 7 rows
    y = layer(x).feats
    (y * g).sum().backward()
    torch.testing.assert_close(y, ref, **TOL)
    torch.testing.assert_close(x.feats.grad, ref_gx, **TOL)
    torch.testing.assert_close(layer.weight.grad, ref_gw, **TOL)
