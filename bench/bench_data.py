"""ResampledDL speed: drawing one epoch's indices at catalogue scale, and the cost of a training epoch.

    python bench/bench_data.py [--n 500000] [--k 5000] [--repeats 3]

1. One epoch's indices for n items in k long-tailed classes, for each strategy, next to fastai's
   `WeightedDL.get_idxs` (numpy `choice` over per-item weights) on the same data. Target: <= 50 ms.
2. Wall time of training epochs through `ResampledDL` vs a plain fastai `TfmdDL` of the same length
   (same model, data, batch size, seed), alternated and repeated. Target: at most 3% more.
"""
import argparse, time, statistics, warnings
warnings.filterwarnings('ignore')
import numpy as np, torch
from fastai.vision.all import *
from fastai.callback.data import WeightedDL
from fastai_imbalance.data import ResampledDL
from fastai_imbalance.datasets import digits_lt


def timeit(f, repeats=5):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)


def bench_draw(n, k, repeats):
    rng = np.random.default_rng(0)
    y = np.minimum(rng.zipf(1.3, n) - 1, k - 1); y[:k] = np.arange(k); rng.shuffle(y)
    items = list(range(n))
    print(f'1. one epoch of indices: {n:,} items, {k:,} classes (largest {np.bincount(y).max():,}, smallest {np.bincount(y).min()})')
    w = (1 / np.bincount(y))[y]
    wdl = WeightedDL(items, bs=64, wgts=w, shuffle=True, num_workers=0)
    t_ref = timeit(wdl.get_idxs, repeats)
    print(f'   fastai WeightedDL (balanced weights, n draws):      {t_ref*1e3:7.1f} ms   (reference)')
    cases = [('balanced', {}), ('sqrt', {}), ('natural', {}), ('undersample', {}), (0.3, {'replace': True}),
             ('balanced', {'per_batch': 4}), ('balanced', {'n': n // 10}), ('item weights', {'item_weights': w})]
    worst = 0
    for s, kw in cases:
        t0 = time.perf_counter()
        dl = ResampledDL(items, labels=y, bs=64, num_workers=0, **({} if s == 'item weights' else {'strategy': s}), **kw)
        t_build = time.perf_counter() - t0
        t = timeit(dl.get_idxs, repeats)
        worst = max(worst, t)
        extra = ', '.join(f'{a}={v if a != "item_weights" else "1/n_c"}' for a, v in kw.items())
        print(f'   ResampledDL {str(s):12s} {extra:18s} {dl.n_draws:>9,} draws {t*1e3:7.1f} ms   '
              f'ratio {t_ref/t:5.1f}x faster than WeightedDL   (built once in {t_build:.2f} s)')
    print(f'   slowest strategy: {worst*1e3:.1f} ms (target <= 50 ms: {"met" if worst <= 0.05 else "MISSED"})')


def bench_epoch(repeats, epochs=2):
    path = digits_lt()
    def loaders(kind):
        set_seed(0, reproducible=True)
        dls = ImageDataLoaders.from_folder(path, valid='valid', bs=25, num_workers=0)
        return dls.resampled('balanced') if kind == 'resampled' else dls  # same epoch length: 250 items, 10 batches
    kinds = ('plain', 'resampled')
    it = {k: [] for k in kinds}
    for r in range(repeats):  # the data pipeline alone: where any loader overhead would show
        for kind in (kinds if r % 2 == 0 else kinds[::-1]):
            dl = loaders(kind).train
            t = time.perf_counter()
            for _ in range(5):
                for b in dl: pass
            it[kind].append((time.perf_counter() - t) / 5)
    # training: one learner, its training loader swapped every epoch (plain, natural, balanced in rotation), so model
    # state, caches and machine drift are shared; the time of each epoch's training phase is recorded
    set_seed(0, reproducible=True)
    dls = ImageDataLoaders.from_folder(path, valid='valid', bs=25, num_workers=0)
    rot = {'plain TfmdDL': dls.train, 'ResampledDL natural': dls.resampled('natural').train, 'ResampledDL balanced': dls.resampled('balanced').train}
    names, fit = list(rot), {k: [] for k in rot}
    class Rotate(Callback):
        def before_epoch(self): self.dls.loaders[0] = rot[names[self.epoch % len(names)]]
        def before_train(self): self.t = time.perf_counter()
        def after_train(self): fit[names[self.epoch % len(names)]].append(time.perf_counter() - self.t)
    learn = vision_learner(dls, resnet18, pretrained=False, cbs=Rotate())
    with learn.no_bar(), learn.no_logging(): learn.fit(len(names) * (repeats * 2 + 1), 1e-3)
    for k in fit: fit[k] = fit[k][1:]  # first round is warm-up
    p, pm = min(it['plain']), statistics.median(it['plain'])
    q, qm = min(it['resampled']), statistics.median(it['resampled'])
    print(f'2. one epoch of 250 digits_lt images at 32 px, bs 25 (10 batches):')
    print(f'   data pipeline only ({repeats} alternated repeats of 5 epochs): plain TfmdDL {p*1e3:.1f} ms (median {pm*1e3:.1f}), '
          f'ResampledDL balanced {q*1e3:.1f} ms (median {qm*1e3:.1f}): ratio {qm/pm:.3f} median')
    base = statistics.median(fit['plain TfmdDL'])
    print(f'   resnet18 training phase, loaders rotated every epoch, {len(fit["plain TfmdDL"])} epochs each (median, spread = IQR/median):')
    for k, v in fit.items():
        qs = statistics.quantiles(v, n=4)
        print(f'     {k:22s} {statistics.median(v):.3f} s  spread {(qs[2]-qs[0])/statistics.median(v):5.1%}  ratio {statistics.median(v)/base:.3f} (target <= 1.03)')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=500_000)
    ap.add_argument('--k', type=int, default=5_000)
    ap.add_argument('--repeats', type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(2)
    bench_draw(a.n, a.k, 5)
    bench_epoch(a.repeats)
