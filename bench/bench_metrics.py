"""Streaming metrics against the references they replace, in one run.

    python bench/bench_metrics.py [--quick] [--only 1,2,3,4]

1. Exact macro one-vs-rest ROC-AUC on 50,000 x 1,000 softmax outputs streamed in batches of 256: fastai's `RocAuc`
   (AccumMetric + scikit-learn) against ours (same `accumulate` calls), time and value.
2. Binned AUC and AUPRC (thresholds=1000) on 100,000 x 5,000 streamed in batches of 500: the metric state's size
   against what AccumMetric would store, time, and the absolute error against the exact metrics on a 20,000-item
   subsample (with each metric's computed error bound).
3. Cohen's kappa on 500,000 (target, predicted class) pairs over 5,000 classes: ours against scikit-learn's
   `cohen_kappa_score` (what fastai's CohenKappa calls).
4. 5,000 classes through `Learner.validate()`: 25,000 balanced validation items, a linear model on 64 features (cheap,
   so the metrics' own cost shows). The time the five metrics (balanced accuracy, macro-F1, kappa, ROC-AUC, AUPRC) add
   to one validation pass, exact and binned, next to fastai's AccumMetric versions; the state bytes each metric keeps;
   and scikit-learn's functions on the same arrays. Values compared.
Long-tailed synthetic labels in 1-3 (Zipf over the classes, so many classes are rare or absent), logits with signal.
"""
import argparse, time, warnings
from types import SimpleNamespace
warnings.filterwarnings('ignore')
import numpy as np, torch
from sklearn import metrics as skm
from fastai.torch_core import to_detach
import fastai.metrics as fm
from fastai_imbalance.metrics import RocAuc, AveragePrecision, CohenKappa, BalancedAccuracy, MacroF1


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
        metric.accumulate(SimpleNamespace(pred=Z[i:i + bs], y=Y[i:i + bs], yb=(Y[i:i + bs],), dl=SimpleNamespace(n=len(Y)), to_detach=to_detach, metrics=[metric]))
    return metric.value

def state_bytes(m):
    "Bytes of the state a metric keeps between batches (ours: counts, histograms or the shared score store; fastai's AccumMetric: its lists)"
    if hasattr(m, 'preds'): return sum(t.nbytes for t in m.preds) + sum(t.nbytes for t in m.targs)
    st = m.state
    if st is None: return 0
    if isinstance(st, torch.Tensor): return st.nbytes
    if hasattr(st, 'h'): return st.h.nbytes
    return sum(t[:st.n].nbytes for t in (st.S, st.P) if t is not None) + (st.W[:st.n].nbytes if st.W is not None else 0)


def section1(g, gen, quick):
    n, C = (10_000, 300) if quick else (50_000, 1_000)
    y = zipf_labels(g, n, C, a=0.5); Z = logits(g, y, C, gen)
    t = time.perf_counter(); ref = stream(fm.RocAuc(), Z, y, 256); t_fa = time.perf_counter() - t
    t = time.perf_counter(); ours = stream(RocAuc(), Z, y, 256); t_us = time.perf_counter() - t
    print(f'1. exact macro OvR ROC-AUC, {n:,} x {C:,}: fastai RocAuc (scikit-learn) {t_fa:.2f} s, ours {t_us:.2f} s: '
          f'{t_fa / t_us:.1f}x faster (target >= 10x); values {ref:.8f} vs {ours:.8f}, |diff| {abs(ref - ours):.1e}')


def section2(g, gen, quick):
    n, C, bs, sub = (20_000, 1_000, 500, 5_000) if quick else (100_000, 5_000, 500, 20_000)
    y = zipf_labels(g, n, C)
    auc_b, ap_b = RocAuc(thresholds=1000), AveragePrecision(thresholds=1000)
    auc_e, ap_e = RocAuc(), AveragePrecision()
    both_b, both_e = [auc_b, ap_b], [auc_e, ap_e]
    for m in both_b + both_e: m.reset()
    t_b = 0.
    for i in range(0, n, bs):
        yb = y[i:i + bs]; zb = logits(g, yb, C, gen)
        t = time.perf_counter()
        lb = SimpleNamespace(pred=zb, y=yb, yb=(yb,), dl=SimpleNamespace(n=n), metrics=both_b)
        for m in both_b: m.accumulate(lb)
        t_b += time.perf_counter() - t
        if i < sub:
            le = SimpleNamespace(pred=zb, y=yb, yb=(yb,), dl=SimpleNamespace(n=sub), metrics=both_e)
            for m in both_e: m.accumulate(le)
    t = time.perf_counter(); vb, vab = auc_b.value, ap_b.value; t_b += time.perf_counter() - t
    stored = n * C * 4 + n * 8  # what AccumMetric keeps: float32 scores and int64 targets
    st = state_bytes(auc_b)
    assert auc_b.state is ap_b.state  # one histogram for both
    print(f'2. binned (thresholds=1000) AUC + AUPRC streamed over {n:,} x {C:,}: {t_b:.1f} s; one shared state for both metrics, {st / 2**20:.0f} MB '
          f'(target <= 100 MB) vs {stored / 2**20:,.0f} MB per metric that AccumMetric would store ({stored / st:.0f}x)')
    ea, eap = auc_e.value, ap_e.value
    sb = [RocAuc(thresholds=1000), AveragePrecision(thresholds=1000)]
    S, P = auc_e.state.S[:sub], auc_e.state.P[:sub]
    for m in sb:
        m.reset()
        for i in range(0, sub, bs): m.update(torch.log(S[i:i + bs]), P[i:i + bs])  # log-probabilities: softmax gives the same scores
    print(f'   on the first {sub:,} items: exact AUC {ea:.6f}, binned {sb[0].value:.6f} (|error| {abs(ea - sb[0].value):.1e}, computed bound {sb[0].error_bound:.1e}); '
          f'exact AUPRC {eap:.6f}, binned {sb[1].value:.6f} (|error| {abs(eap - sb[1].value):.1e}, computed bound {sb[1].error_bound:.1e})')


def section3(g, gen, quick):
    n, C = 500_000, 5_000
    yt = zipf_labels(g, n, C); yp = torch.where(torch.rand(n, generator=gen) < .7, yt, zipf_labels(g, n, C))
    k = CohenKappa(n_classes=C)
    t = time.perf_counter(); k.reset(); k.update(yp, yt); v = k.value; t_k = time.perf_counter() - t
    t = time.perf_counter(); ref = skm.cohen_kappa_score(yt.numpy(), yp.numpy(), labels=np.arange(C)); t_s = time.perf_counter() - t
    print(f"3. Cohen's kappa, {n:,} predictions over {C:,} classes: ours {t_k:.3f} s (target <= 0.2 s), scikit-learn {t_s:.2f} s "
          f'({t_s / t_k:.0f}x); values {v:.8f} vs {ref:.8f}; state {state_bytes(k) / 1024:.0f} KB (a confusion matrix: {C * C * 8 / 2**20:.0f} MB)')


def _learner(n, C, d=64, bs=500, seed=0):
    "A linear model on `d` random features, `n` validation items balanced over `C` classes, through fastai's Learner"
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    centres = torch.randn(C, d, generator=gen)
    x = centres[y] + 1.5 * torch.randn(n, d, generator=gen)
    ds = list(zip(x, y))
    dls = DataLoaders(DataLoader(ds[:bs], bs=bs), DataLoader(ds, bs=bs))
    model = torch.nn.Linear(d, C)
    with torch.no_grad(): model.weight.copy_(centres); model.bias.zero_()  # a model with signal, no training needed
    return Learner(dls, model, loss_func=CrossEntropyLossFlat())


def section4(g, gen, quick):
    n, C = (5_000, 1_000) if quick else (25_000, 5_000)
    learn = _learner(n, C)
    def timed(mets, reps=2):
        learn.metrics = mets
        best = float('inf')
        with learn.no_bar(), learn.no_logging():
            for _ in range(reps):
                t = time.perf_counter(); vals = learn.validate(); best = min(best, time.perf_counter() - t)
        return best, [float(v) for v in vals[1:]]
    base, _ = timed([])
    ours_e = [BalancedAccuracy(), MacroF1(), CohenKappa(), RocAuc(), AveragePrecision()]
    ours_b = [BalancedAccuracy(), MacroF1(), CohenKappa(), RocAuc(thresholds=1000), AveragePrecision(thresholds=1000)]
    t_e, v_e = timed(ours_e)
    bytes_e = [state_bytes(m) for m in ours_e]
    t_b, v_b = timed(ours_b)
    bytes_b = [state_bytes(m) for m in ours_b]
    ap_fa = fm.skm_to_fastai(skm.average_precision_score, activation=fm.ActivationType.Softmax, flatten=False)  # fastai has no multiclass AP: AccumMetric over scikit-learn
    fastai_m = [fm.BalancedAccuracy(), fm.F1Score(average='macro'), fm.CohenKappa(), fm.RocAuc(), ap_fa]
    t_f, v_f = timed(fastai_m, reps=1)
    bytes_f = [state_bytes(m) for m in fastai_m]
    print(f'4. {C:,} classes, one validation pass over {n:,} items through Learner.validate() (a linear model: {base:.2f} s without metrics)')
    names = ['balanced accuracy', 'macro-F1', 'kappa', 'ROC-AUC', 'AUPRC']
    print(f'   time the five metrics add: ours exact {t_e - base:.2f} s (target <= 3 s), ours binned {t_b - base:.2f} s (target <= 1 s), '
          f'fastai (AccumMetric + scikit-learn) {t_f - base:.2f} s: {(t_f - base) / (t_e - base):.1f}x and {(t_f - base) / (t_b - base):.1f}x')
    print('   state bytes per metric (ours exact | ours binned | fastai):')
    for i, nm in enumerate(names):
        shared = ' (shared with AUPRC)' if i == 3 else ' (the same store as ROC-AUC: 0 more)' if i == 4 else ''
        print(f'     {nm:18s} {bytes_e[i] / 2**20:9.2f} MB | {bytes_b[i] / 2**20:7.2f} MB | {bytes_f[i] / 2**20:9.1f} MB{shared}')
    exact_total = sum(bytes_e[:4]); binned_total = sum(bytes_b[:4]); fa_total = sum(bytes_f)
    print(f'     all five: {exact_total / 2**20:.0f} MB exact, {binned_total / 2**20:.0f} MB binned, {fa_total / 2**20:,.0f} MB fastai ({fa_total / exact_total:.1f}x and {fa_total / binned_total:.0f}x)')
    print('   values, ours exact vs fastai: ' + ', '.join(f'{nm} {a:.6f} vs {b:.6f}' for nm, a, b in zip(names, v_e, v_f)))
    print('   binned vs exact: ' + ', '.join(f'{nm} error {abs(a - b):.1e} (bound {m.error_bound:.1e})' for nm, a, b, m in zip(names[3:], v_b[3:], v_e[3:], ours_b[3:])))
    # scikit-learn on the same arrays
    with learn.no_bar(): p, y = learn.get_preds()
    yp = p.argmax(1).numpy(); y = y.numpy(); pn = p.numpy()
    t = time.perf_counter()
    skm.balanced_accuracy_score(y, yp); skm.f1_score(y, yp, average='macro'); skm.cohen_kappa_score(y, yp)
    t_sc = time.perf_counter() - t
    t = time.perf_counter(); auc = skm.roc_auc_score(y, pn, multi_class='ovr'); t_sa = time.perf_counter() - t
    t = time.perf_counter(); ap = skm.average_precision_score(np.eye(C, dtype=np.uint8)[y], pn); t_sp = time.perf_counter() - t
    print(f'   scikit-learn on the gathered arrays: the three counting scores {t_sc:.2f} s, roc_auc_score {t_sa:.1f} s ({auc:.6f}), average_precision_score {t_sp:.1f} s ({ap:.6f})')


def main(quick=False, only=None):
    torch.set_num_threads(2)
    g, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    for i, f in enumerate((section1, section2, section3, section4), 1):
        if only is None or i in only: f(g, gen, quick)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='smaller sizes, for a smoke run')
    ap.add_argument('--only', type=str, default=None, help='comma-separated sections, e.g. 4')
    a = ap.parse_args()
    main(a.quick, None if a.only is None else [int(x) for x in a.only.split(',')])
