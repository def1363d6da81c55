"""Streaming metrics against the references they replace, in one run.

    python bench/bench_metrics.py [--quick]

1. Exact macro one-vs-rest ROC-AUC on 50,000 x 1,000 softmax outputs streamed in batches of 256: fastai's `RocAuc`
   (AccumMetric + scikit-learn) against ours (same `accumulate` calls), time and value.
2. Binned AUC and AUPRC (thresholds=1000) on 100,000 x 5,000 streamed in batches of 500: the metric state's size
   against what AccumMetric would store, time, and the absolute error against the exact metrics on a 20,000-item
   subsample (with the AUC's computed error bound).
3. Cohen's kappa on 500,000 (target, predicted class) pairs over 5,000 classes: ours against scikit-learn's
   `cohen_kappa_score` (what fastai's CohenKappa calls).
Long-tailed synthetic labels (Zipf over the classes, so many classes are rare or absent), logits with signal.
"""
import argparse, time, warnings
from types import SimpleNamespace
warnings.filterwarnings('ignore')
import numpy as np, torch
from sklearn.metrics import cohen_kappa_score
from fastai.torch_core import to_detach
from fastai.metrics import RocAuc as FastaiRocAuc
from fastai_imbalance.metrics import RocAuc, AveragePrecision, CohenKappa


def zipf_labels(g, n, C, a=1.1):
    p = 1 / np.arange(1, C + 1) ** a
    return torch.as_tensor(g.choice(C, n, p=p / p.sum()))

def logits(g, y, C, gen):
    z = torch.randn(len(y), C, generator=gen) * 2
    z[torch.arange(len(y)), y] += 3.
    return z

def stream(metric, Z, Y, bs):
    "Feed a fastai metric through `accumulate`, as a Learner would, and read its value"
    metric.reset()
    for i in range(0, len(Y), bs):
        metric.accumulate(SimpleNamespace(pred=Z[i:i + bs], y=Y[i:i + bs], yb=(Y[i:i + bs],), dl=None, to_detach=to_detach))
    return metric.value

def state_bytes(m):
    st = m.state
    if isinstance(st, tuple): return sum(t.nbytes for l in st for t in l)
    return st.nbytes


def main(quick=False):
    torch.set_num_threads(2)
    g, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    # 1. exact AUC
    n, C = (10_000, 300) if quick else (50_000, 1_000)
    y = zipf_labels(g, n, C, a=0.5); Z = logits(g, y, C, gen)
    t = time.perf_counter(); ref = stream(FastaiRocAuc(), Z, y, 256); t_fa = time.perf_counter() - t
    t = time.perf_counter(); ours = stream(RocAuc(), Z, y, 256); t_us = time.perf_counter() - t
    print(f'1. exact macro OvR ROC-AUC, {n:,} x {C:,}: fastai RocAuc (scikit-learn) {t_fa:.2f} s, ours {t_us:.2f} s: '
          f'{t_fa / t_us:.1f}x faster (target >= 10x); values {ref:.8f} vs {ours:.8f}, |diff| {abs(ref - ours):.1e}')
    # 2. binned AUC + AUPRC
    n, C, bs, sub = (20_000, 1_000, 500, 5_000) if quick else (100_000, 5_000, 500, 20_000)
    y = zipf_labels(g, n, C)
    auc_b, ap_b = RocAuc(thresholds=1000), AveragePrecision(thresholds=1000)
    auc_e, ap_e = RocAuc(), AveragePrecision()
    for m in (auc_b, ap_b, auc_e, ap_e): m.reset()
    t_b = 0.
    for i in range(0, n, bs):
        yb = y[i:i + bs]; zb = logits(g, yb, C, gen)
        lrn = SimpleNamespace(pred=zb, y=yb, yb=(yb,), dl=None)
        t = time.perf_counter(); auc_b.accumulate(lrn); ap_b.accumulate(lrn); t_b += time.perf_counter() - t
        if i < sub: auc_e.accumulate(lrn); ap_e.accumulate(lrn)
    t = time.perf_counter(); vb, vab = auc_b.value, ap_b.value; t_b += time.perf_counter() - t
    stored = n * C * 4 + n * 8  # what AccumMetric keeps: float32 scores and int64 targets
    st = state_bytes(auc_b) + state_bytes(ap_b)
    print(f'2. binned (1,000 thresholds) AUC + AUPRC streamed over {n:,} x {C:,}: {t_b:.1f} s; state of both metrics {st / 2**20:.0f} MB '
          f'(target <= 100 MB) vs {stored / 2**20:,.0f} MB per metric that AccumMetric would store ({stored / st:.0f}x)')
    sb_auc, sb_ap = RocAuc(thresholds=1000), AveragePrecision(thresholds=1000)
    sub_state = (torch.cat(auc_e.state[0]), torch.cat(auc_e.state[1]))
    for m in (sb_auc, sb_ap):
        m.reset()
        for i in range(0, sub, bs): m.update(torch.log(sub_state[0][i:i + bs]), sub_state[1][i:i + bs])  # log-probabilities: softmax gives the same scores
    ea, eap = auc_e.value, ap_e.value
    print(f'   on the first {sub:,} items: exact AUC {ea:.6f}, binned {sb_auc.value:.6f} (|error| {abs(ea - sb_auc.value):.1e}, '
          f'computed bound {sb_auc.error_bound:.1e}); exact AUPRC {eap:.6f}, binned {sb_ap.value:.6f} (|error| {abs(eap - sb_ap.value):.1e})')
    # 3. kappa
    n, C = 500_000, 5_000
    yt = zipf_labels(g, n, C); yp = torch.where(torch.rand(n, generator=gen) < .7, yt, zipf_labels(g, n, C))
    k = CohenKappa(n_classes=C)
    t = time.perf_counter(); k.reset(); k.update(yp, yt); v = k.value; t_k = time.perf_counter() - t
    t = time.perf_counter(); ref = cohen_kappa_score(yt.numpy(), yp.numpy()); t_s = time.perf_counter() - t
    print(f"3. Cohen's kappa, {n:,} predictions over {C:,} classes: ours {t_k:.3f} s (target <= 0.2 s), scikit-learn {t_s:.2f} s "
          f'({t_s / t_k:.0f}x); values {v:.8f} vs {ref:.8f}')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='smaller sizes, for a smoke run')
    main(ap.parse_args().quick)
