"""The gallery's classic machine-learning gradients: losses, a small network, log|det|.

Same rules as chapter5: small seeded float64 inputs, only the checked inputs require grad,
and the manual gradient is the closed form, never autograd.
"""

import torch

from tracer.exercises._inputs import Manual
from tracer.exercises._inputs import randn as _randn

f64 = torch.float64


def logistic() -> Manual:
    gen = torch.Generator().manual_seed(1)
    X = _randn(gen, 4, 3)
    w = _randn(gen, 3).requires_grad_()
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=f64)
    p = torch.sigmoid(torch.mv(X, w))
    L = -torch.sum(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    L.backward()
    return {w: torch.mv(X.T, torch.sigmoid(torch.mv(X, w)) - y)}


def softmax_ce() -> Manual:
    gen = torch.Generator().manual_seed(2)
    z = _randn(gen, 4).requires_grad_()
    y = torch.softmax(_randn(gen, 4), dim=0)  # soft labels: Σy = 1
    L = -torch.sum(y * torch.log_softmax(z, dim=0))
    L.backward()
    return {z: torch.softmax(z, dim=0) - y}


def mlp() -> Manual:
    gen = torch.Generator().manual_seed(3)
    X = _randn(gen, 2, 3)
    Y = _randn(gen, 2, 2)
    W1 = _randn(gen, 3, 3).requires_grad_()
    b1 = _randn(gen, 3).requires_grad_()
    W2 = _randn(gen, 2, 3).requires_grad_()
    b2 = _randn(gen, 2).requires_grad_()
    H = torch.tanh(X @ W1.T + b1)
    Ŷ = H @ W2.T + b2
    L = 0.5 * torch.sum((Ŷ - Y) ** 2)
    L.backward()
    with torch.no_grad():  # the backpropagation formulas by hand, with no graph of their own
        Δ2 = Ŷ - Y
        Δ1 = (Δ2 @ W2) * (1 - H**2)
        return {W1: Δ1.T @ X, b1: Δ1.sum(dim=0), W2: Δ2.T @ H, b2: Δ2.sum(dim=0)}


def logdet() -> Manual:
    gen = torch.Generator().manual_seed(4)
    X = (_randn(gen, 3, 3) + 3 * torch.eye(3, dtype=f64)).requires_grad_()
    L = torch.linalg.slogdet(X).logabsdet
    L.backward()
    return {X: torch.linalg.inv(X).T}


def backprop_by_hand() -> Manual:
    """A lesson in backpropagation by hand: a two-layer network chunked into named
    intermediates (batch norm written out step by step), each intermediate's gradient
    derived by hand from the one after it, as the loss sends it back."""
    gen = torch.Generator().manual_seed(7)
    n = 4
    X = _randn(gen, n, 3)
    Y = _randn(gen, n, 2)
    W1 = _randn(gen, 3, 4).requires_grad_()
    gamma = (1 + 0.1 * _randn(gen, 1, 4)).requires_grad_()
    beta = (0.1 * _randn(gen, 1, 4)).requires_grad_()
    W2 = _randn(gen, 4, 2).requires_grad_()
    eps = 1e-5
    hpre = X @ W1
    bnmean = hpre.mean(0, keepdim=True)
    bndiff = hpre - bnmean
    bnvar = (bndiff**2).mean(0, keepdim=True)  # the biased variance: a mean over the batch
    bnvar_inv = (bnvar + eps) ** -0.5
    bnraw = bndiff * bnvar_inv
    hbn = gamma * bnraw + beta
    h = torch.tanh(hbn)
    logits = h @ W2
    L = (Y * logits).sum()  # a linear loss (Y weighs each logit): the picture fits a slide
    intermediates = (hpre, bnmean, bndiff, bnvar, bnvar_inv, bnraw, hbn, h, logits)
    for t in intermediates:
        t.retain_grad()
    L.backward()
    with torch.no_grad():  # by hand, from the loss back: each from the one before it
        dlogits = Y.clone()
        dW2 = h.T @ dlogits
        dh = dlogits @ W2.T
        dhbn = (1 - h**2) * dh
        dgamma = (bnraw * dhbn).sum(0, keepdim=True)
        dbeta = dhbn.sum(0, keepdim=True)
        dbnraw = gamma * dhbn
        dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)
        dbnvar = -0.5 * (bnvar + eps) ** -1.5 * dbnvar_inv
        dbndiff = bnvar_inv * dbnraw + 2 * bndiff / n * dbnvar
        dbnmean = -dbndiff.sum(0, keepdim=True)
        dhpre = dbndiff + dbnmean / n
        dW1 = X.T @ dhpre
    return {
        logits: dlogits,
        W2: dW2,
        h: dh,
        hbn: dhbn,
        gamma: dgamma,
        beta: dbeta,
        bnraw: dbnraw,
        bnvar_inv: dbnvar_inv,
        bnvar: dbnvar,
        bndiff: dbndiff,
        bnmean: dbnmean,
        hpre: dhpre,
        W1: dW1,
    }
