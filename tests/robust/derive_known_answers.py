#!/usr/bin/python3
# Derives the known answers hardcoded in tests/unit/test_robust_rules.cpp, independently of the C++
# code (numpy, written from the papers' definitions). CI does not run it. Run it by hand with
#   /usr/bin/python3 tests/robust/derive_known_answers.py     (needs python3-numpy)
import numpy as np

np.set_printoptions(precision=17)

# Set A: n = 5, d = 2, f = 1 (x4 is the outlier).
A = np.array([[1.0, 2.0], [2.0, 0.0], [3.0, 1.0], [4.0, 5.0], [10.0, -3.0]])
# Set B: n = 7, d = 3, f = 1 (x6 is the outlier); big enough for Bulyan (n >= 4f + 3).
B = np.array([[0.0, 1.0, 2.0], [0.5, 1.5, 1.0], [1.0, 0.0, 2.5], [-0.5, 1.0, 1.5],
              [0.2, 0.8, 2.2], [1.5, 2.0, 0.5], [9.0, -7.0, 6.0]])


def trimmed_mean(X, f):
    S = np.sort(X, axis=0)
    return S[f:len(X) - f].mean(axis=0)


def krum_scores(X, f, members=None):
    members = list(range(len(X))) if members is None else members
    k = len(members)
    scores = []
    for i in members:
        d2 = sorted(float(np.sum((X[i] - X[j]) ** 2)) for j in members if j != i)
        scores.append(sum(d2[:k - f - 2]))
    return np.array(scores)


def krum(X, f):
    s = krum_scores(X, f)
    return int(np.argmin(s)), s


def multi_krum(X, f, m):
    s = krum_scores(X, f)
    chosen = np.argsort(s, kind="stable")[:m]
    return X[np.sort(chosen)].mean(axis=0), sorted(chosen.tolist())


def bulyan(X, f):
    n = len(X)
    theta, beta = n - 2 * f, n - 4 * f
    remaining, selected = list(range(n)), []
    while len(selected) < theta:
        s = krum_scores(X, f, remaining)
        pick = remaining[int(np.argmin(s))]
        selected.append(pick)
        remaining.remove(pick)
    sel = X[sorted(selected)]
    med = np.median(sel, axis=0)
    out = []
    for j in range(X.shape[1]):
        order = np.argsort(np.abs(sel[:, j] - med[j]), kind="stable")[:beta]
        out.append(sel[order, j].mean())
    return np.array(out), sorted(selected)


def geometric_median(X, iters=100, nu=1e-6, tol=1e-9):
    z = np.median(X, axis=0)
    for _ in range(iters):
        w = 1.0 / np.maximum(nu, np.linalg.norm(X - z, axis=1))
        nz = (w[:, None] * X).sum(axis=0) / w.sum()
        step = np.linalg.norm(nz - z)
        z = nz
        if step <= tol:
            break
    w = 1.0 / np.maximum(nu, np.linalg.norm(X - z, axis=1))
    return z, w / w.sum()


def centered_clipping(X, tau=1.0, iters=3):
    v = np.median(X, axis=0)
    for _ in range(iters):
        dist = np.linalg.norm(X - v, axis=1)
        c = np.minimum(1.0, tau / np.maximum(dist, 1e-300))
        v = v + ((X - v) * c[:, None]).mean(axis=0)
    return v, c


def nnm(X, f):
    n = len(X)
    out = np.empty_like(X)
    for i in range(n):
        d = np.linalg.norm(X - X[i], axis=1)
        out[i] = X[np.sort(np.argsort(d, kind="stable")[:n - f])].mean(axis=0)
    return out


def show(name, v):
    print(f"{name}: " + ", ".join(repr(float(x)) for x in np.ravel(v)))


for label, X, f in (("A", A, 1), ("B", B, 1)):
    print(f"--- set {label} (n = {len(X)}, f = {f})")
    show("mean", X.mean(axis=0))
    show("median", np.median(X, axis=0))
    show("trimmed-mean", trimmed_mean(X, f))
    i, s = krum(X, f)
    print(f"krum: index {i}; scores {s.tolist()}")
    mk, chosen = multi_krum(X, f, len(X) - f)
    show(f"multi-krum m=n-f chosen {chosen}", mk)
    mk2, chosen2 = multi_krum(X, f, 2)
    show(f"multi-krum m=2 chosen {chosen2}", mk2)
    z, w = geometric_median(X)
    show("geometric-median", z)
    show("geometric-median weights", w)
    v, c = centered_clipping(X)
    show("centered-clipping tau=1 it=3", v)
    show("centered-clipping factors", c)
    v2, _ = centered_clipping(X, tau=0.5, iters=5)
    show("centered-clipping tau=0.5 it=5", v2)
    M = nnm(X, f)
    show("nnm rows", M)
    show("nnm + mean", M.mean(axis=0))
    show("nnm + median", np.median(M, axis=0))
    i2, s2 = krum(M, f)
    print(f"nnm + krum: index {i2}; row {M[i2].tolist()}")
    if len(X) >= 4 * f + 3:
        b, sel = bulyan(X, f)
        show(f"bulyan selected {sel}", b)
