"""An independent NumPy (float64) rendering of the released PHNet forward pass.

Written from the facts file's description (shared/reference/phnet-official-code.md),
with plain loops where the library uses matrix tricks, so that the tests compare two
different computations. It reads the authors' state-dict key names directly.

One fact the facts file gets wrong (issue 16): the PFE's conv head does not see the
transferred image. The authors' harmonizer returns (composite, transferred) and their
PFE block keeps the composite: the transferred foreground inside the mask and the
zero-filled background divided by 255 outside it, blended by the mask. ``pfe_gate``
renders that; ``head_input="transferred"`` renders the older reading (the bundled
"lite" weights were trained with it).
"""

from __future__ import annotations

import numpy as np

EPS_PN = 1e-7
EPS_PFE = 1e-8


def conv2d(x, w, b, stride, pad):
    """x (C,H,W), w (O,C,k,k) -> (O,H',W')."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out_c, _, k, _ = w.shape
    h = (x.shape[1] - k) // stride + 1
    wd = (x.shape[2] - k) // stride + 1
    out = np.zeros((out_c, h, wd))
    for a in range(k):
        for c in range(k):
            rows = slice(a, a + stride * (h - 1) + 1, stride)
            cols = slice(c, c + stride * (wd - 1) + 1, stride)
            out += np.einsum("chw,oc->ohw", x[:, rows, cols], w[:, :, a, c])
    return out if b is None else out + b[:, None, None]


def conv_transpose2d(x, w, b, stride, pad):
    """x (C,H,W), w (C,O,k,k) -> (O,(H-1)s-2p+k, ...)."""
    _, h, wd = x.shape
    k = w.shape[2]
    full = np.zeros((w.shape[1], (h - 1) * stride + k, (wd - 1) * stride + k))
    for a in range(k):
        for c in range(k):
            rows = slice(a, a + stride * (h - 1) + 1, stride)
            cols = slice(c, c + stride * (wd - 1) + 1, stride)
            full[:, rows, cols] += np.einsum("chw,co->ohw", x, w[:, :, a, c])
    out = full[:, pad : full.shape[1] - pad, pad : full.shape[2] - pad]
    return out + b[:, None, None]


def instance_norm(x):
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5)


def col(a):
    """(C,) -> (C,1,1) for broadcasting over a feature map."""
    return a[:, None, None]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def bands(size, grid):
    step = size // grid
    return [(i * step, (i + 1) * step if i < grid - 1 else size) for i in range(grid)]


def masked_stats(x, m):
    """x (C,H,W), m (H,W) -> mean (C,), std (C,) as the PN block computes them."""
    area = m.sum() + EPS_PN
    mean = (x * m).sum(axis=(1, 2)) / area
    var = (((x - mean[:, None, None]) * m) ** 2).sum(axis=(1, 2)) / area
    return mean, np.sqrt(var + EPS_PN)


def pn_block(x, m, p, prefix, grid):
    """The released PN block on a skip feature x (C,H,W) with mask m (H,W)."""
    c = x.shape[0]
    g = p[prefix + "grid_weights"][0]  # (C,G,G)
    bg = 1.0 - m
    mu_patch = np.zeros(c)
    for i, (r0, r1) in enumerate(bands(x.shape[1], grid)):
        for j, (c0, c1) in enumerate(bands(x.shape[2], grid)):
            mu_p, _ = masked_stats(x[:, r0:r1, c0:c1], bg[r0:r1, c0:c1])
            mu_patch += g[:, i, j] * mu_p
    mu_b, sd_b = masked_stats(x, bg)
    mu_f, sd_f = masked_stats(x, m)

    def v(name):
        return p[prefix + name].reshape(c, 1, 1)

    bg_out = (x - col(mu_b)) / col(sd_b) * v("bg_var") + v("bg_bias")
    z = (x - col(mu_f)) / col(sd_f)
    glob = (z * col(sd_b) + col(mu_b)) * v("fg_var") + v("fg_bias")
    patch = (z * col(sd_b) + col(mu_patch)) * v("patched_fg_var") + v("patched_fg_bias")
    w = p[prefix + "weights"]
    fg_out = w[0] * glob + w[1] * patch
    return fg_out * m + bg_out * (1 - m)


def plain_stats(x):
    """Per-channel mean and unbiased std of x (C,h,w) over all pixels."""
    flat = x.reshape(x.shape[0], -1)
    return flat.mean(axis=1), flat.std(axis=1, ddof=1)


def pfe_gate(img, m, p, grid, head_input="composite"):
    """The released PFE, reduced to its SE gate scalar."""
    fg, bg = img * m, img * (1 - m)
    mu_f, sd_f = plain_stats(fg)
    mu_b, sd_b = plain_stats(bg)
    local = np.zeros_like(fg)
    for r0, r1 in bands(img.shape[1], grid):
        for c0, c1 in bands(img.shape[2], grid):
            pf, pb = fg[:, r0:r1, c0:c1], bg[:, r0:r1, c0:c1]
            pmf, psf = plain_stats(pf)
            pmb, psb = plain_stats(pb)
            local[:, r0:r1, c0:c1] = (pf - col(pmf)) * col(psb) / (col(psf) + EPS_PFE) + col(pmb)
    glob = (fg - col(mu_f)) * col(sd_b) / (col(sd_f) + EPS_PFE) + col(mu_b)
    gw = p["feature_extractor.patch_harmonizer.grid_weights"]
    transferred = gw[0] * local + gw[1] * glob
    if head_input == "composite":
        seen = m * transferred + (1 - m) * (bg / 255.0)
    else:
        seen = transferred
    head = conv2d(np.concatenate([fg, seen]), p["feature_extractor.head.0.weight"],
                  p["feature_extractor.head.0.bias"], 1, 1)
    head = np.maximum(head, 0)
    return sigmoid(head.max(axis=(1, 2)).mean())


def phnet_forward(img, m, p, grids, pfe_grid, head_input="composite"):
    """img (3,H,W) in [0,1], m (H,W) in [0,1], p: the authors' state dict as float64 arrays."""
    feats, masks, x = [], [m], img
    for k in range(6):
        stride = 2 if k % 2 == 0 else 1
        x = conv2d(x, p[f"encoder.{k}.0.weight"], p[f"encoder.{k}.0.bias"], stride, 1)
        x = np.maximum(instance_norm(x), 0)
        feats.append(x)
        masks.append(masks[-1][::2, ::2] if k % 2 == 0 else masks[-1])
    # SE with the PFE gate
    y = x.mean(axis=(1, 2))
    y = np.maximum(p["SE_block.fc.0.weight"] @ y + p["SE_block.fc.0.bias"], 0)
    y = sigmoid(p["SE_block.fc.2.weight"] @ y + p["SE_block.fc.2.bias"])
    s = pfe_gate(img, m, p, pfe_grid, head_input)
    x = x * y[:, None, None] + x * s
    masks = masks[::-1]
    start = 7 - len(grids)
    layers = [(3, 1, True, True), (4, 2, True, True), (3, 1, True, True),
              (4, 2, False, True), (3, 1, False, True), (4, 2, False, False)]
    for i, (_, stride, bn, act) in enumerate(layers):
        f = feats[5 - i]
        if i >= start:
            f = pn_block(f, masks[i], p, f"normalizers.{i - start}.", grids[i - start])
        x = np.maximum(conv2d(np.concatenate([x, f]), p[f"skip.{i}.rconv.weight"], None, 1, 1), 0)
        x = conv_transpose2d(x, p[f"decoder.{i}.0.weight"], p[f"decoder.{i}.0.bias"], stride, 1)
        if bn:
            q = f"decoder.{i}.1."
            x = ((x - p[q + "running_mean"][:, None, None])
                 / np.sqrt(p[q + "running_var"][:, None, None] + 1e-5)
                 * p[q + "weight"][:, None, None] + p[q + "bias"][:, None, None])
        if act:
            x = np.where(x > 0, x, 0.01 * x)
    return sigmoid(x)
