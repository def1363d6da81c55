"""How tight must EM's stop be? The duality gap against the priors' distance to a long run and the shifted predictions that change.

    python bench/bench_em_tol.py

8,000 synthetic calibrated posteriors over 2,000 long-tailed classes (counts 200 down to 1), the target prior reversed;
SQUAREM-accelerated EM as in `em_priors`, run for 20,000 steps; for each gap threshold: the steps to reach it, the L1 distance of
its priors to the last ones, the mean log-likelihood still to gain, and the share of argmax predictions (after the shift) that differ.
The measurement behind `em_priors`' default tol (1e-5, or a thousandth of (k-1)/(2n) when larger, at most 1e-4: 1e-4 at this size).
"""
import torch, time, numpy as np
from fastai_imbalance.priorshift import _em_step, em_priors
torch.set_num_threads(1); torch.manual_seed(0)
C, n = 2000, 8000
cnt = np.maximum(1, (200 * np.exp(-np.arange(C) / (C / 5.3)))).astype(int)
src = torch.tensor(cnt / cnt.sum(), dtype=torch.float64)
tgt = src.flip(0)
y = torch.multinomial(tgt, n, replacement=True)
z = torch.randn(n, C) * 1.5; z[torch.arange(n), y] += 4.
P = torch.softmax(z + src.log().float(), 1)
step = _em_step(P, src, 1e-8, False)
def fix(x): x = x.clamp_min(1e-8); return x / x.sum()
pi = fix(src.clone()); p1, ll, gap = step(pi); it = 1; hist = []
t = time.perf_counter()
while it < 20000 and gap > 1e-7:
    p2, _, gap1 = step(p1)
    r, v = p1 - pi, p2 - 2 * p1 + pi
    a = -torch.sqrt((r * r).sum() / (v * v).sum().clamp_min(1e-30)).clamp_min(1.)
    x = fix(pi - 2 * a * r + a * a * v)
    px, llx, gapx = step(x); it += 2
    if llx >= ll: pi, p1, ll, gap = x, px, llx, gapx
    else: (p1, ll, gap), pi, it = step(p2), p2, it + 1
    hist.append((it, gap, p1.clone(), ll))
print('time', time.perf_counter() - t, 'iters', it)
fin = hist[-1][2]
pred = lambda p: (P * (p / src).float()).argmax(1)
pf = pred(fin)
for th in [1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6]:
    h = next(h for h in hist if h[1] < th)
    print(f'gap<{th:g}: iter {h[0]}, L1 to final {float((h[2]-fin).abs().sum()):.2e}, ll diff {hist[-1][3]-h[3]:.2e}, argmax changed {(pred(h[2]) != pf).float().mean().item():.2e}')
