"""The 5,000-class scale run: what the library costs when the classes are many, through `Learner.fit`.

    python bench/bench_scale.py [--classes 5000] [--n-max 200] [--valid-per-class 5] [--target 20000] [--quick] [--stage]

5,000 classes whose training counts fall exponentially from 200 to 1 (about 188,000 items), 25,000 balanced
validation items (5 per class), a cheap model (64 features -> 64 -> 5,000 logits) so that the library's own costs
show, fed through fastai `Datasets`/`DataLoaders` and `Learner.fit` like any other data. Each step prints its wall time
and its peak resident memory above the process's level when the step began (sampled every 5 ms):

  a plain fit (1 epoch); one validation pass without metrics, with the five metrics (balanced accuracy, macro-F1,
  kappa, ROC-AUC, AUPRC) exact and binned; a fit with the five metrics; a `dls.resampled('balanced')` fit;
  a `BalancedFinetune()` fit (2 epochs: one natural, one balanced stage); `get_preds` with and without
  `PriorShift('uniform')`; `estimate_priors` (BCTS calibration + EM) on 20,000 unlabelled items drawn with other
  priors; `ImbalanceInterpretation.from_learner` with its tables and plots; `class_report`.

Ratios are against the step each one adds to (a validation pass, a plain fit, a plain `get_preds`). Targets:
the five metrics add at most 3 s to the validation pass (binned at most 1 s); `estimate_priors` under 30 s and 3 GB;
interpretation under 10 s; nothing quadratic in the classes except the confusion matrix that interpretation outputs.
"""
import argparse, os, threading, time, warnings
warnings.filterwarnings('ignore')
import numpy as np, torch, psutil
from torch import nn
import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
from fastai.data.core import Datasets
from fastai.data.transforms import Categorize
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.optimizer import Adam
from fastai.torch_core import params
from fastai.callback.progress import ProgressCallback
from fastcore.basics import noop
from fastai_imbalance.all import *
from fastai_imbalance.datasets import lt_counts


RES, BF, PS = "dls.resampled('balanced') fit, 1 epoch", 'BalancedFinetune() fit, 2 epochs (1 natural + 1 stage)', "get_preds with PriorShift('uniform')"


class Peak:
    "Wall time and peak RSS above the level at entry, sampled by a thread"
    def __init__(self, name, rows): self.name, self.rows = name, rows
    def __enter__(self):
        self.p = psutil.Process(); self.base = self.peak = self.p.memory_info().rss; self.stop = False
        def watch():
            while not self.stop: self.peak = max(self.peak, self.p.memory_info().rss); time.sleep(.005)
        self.th = threading.Thread(target=watch, daemon=True); self.th.start(); self.t = time.perf_counter()
        return self
    def __exit__(self, *a):
        self.wall = time.perf_counter() - self.t; self.stop = True; self.th.join()
        self.mem = (max(self.peak, self.p.memory_info().rss) - self.base) / 2**30
        self.rows[self.name] = (self.wall, self.mem)
        print(f'  {self.name:58s} {self.wall:7.2f} s  peak +{self.mem:5.2f} GB', flush=True)


def make_data(C, n_max, n_valid, n_target, d=64, seed=0):
    "Features x = class mean + noise; long-tailed training counts, balanced validation, a target set with reversed (shifted) priors"
    g = np.random.default_rng(seed)
    mu = g.normal(size=(C, d)).astype(np.float32)
    counts = np.array(lt_counts(n_max, n_max, C))
    ytr = np.repeat(np.arange(C), counts); yva = np.repeat(np.arange(C), n_valid)
    p_t = counts[::-1] / counts.sum()  # the rare classes become the frequent ones
    yte = g.choice(C, n_target, p=p_t)
    feats = lambda y: torch.from_numpy(mu[y] + 1.2 * g.normal(size=(len(y), d)).astype(np.float32))
    X = torch.cat([feats(ytr), feats(yva), feats(yte)]); y = np.concatenate([ytr, yva, yte])
    ntr, nva = len(ytr), len(yva)
    return X, y, counts, ntr, nva, torch.as_tensor(p_t)


def stage_costs(mk, dls, epochs=4):
    "BalancedFinetune's stage against a natural epoch of the same fit: the default (ten passes over the cache in triple batches), the stage through the body, the classifier alone uncached, one pass over the cache, the last epoch's inputs"
    from bench_finetune import StageTimer
    print(f'\nthe stage\'s cost ({epochs} epochs, the last {epochs // 4} the stage; training phases, cache included):')
    bs = dls.train.bs
    for name,bf in (('BalancedFinetune()', BalancedFinetune()), ('BalancedFinetune(cache=False)', BalancedFinetune(cache=False)),
                    ("BalancedFinetune(train='classifier', cache=False)", BalancedFinetune(train='classifier', cache=False)),
                    ('BalancedFinetune(n=None, bs=dls.bs)', BalancedFinetune(n=None, bs=bs)),
                    ("BalancedFinetune(cache='last_epoch', n=None, bs=dls.bs)", BalancedFinetune(cache='last_epoch', n=None, bs=bs))):
        t = StageTimer()
        mk(cbs=bf).fit(epochs, 1e-2, cbs=t)
        r = t.summary()
        print(f"  {name:58s} stage {r['stage_s']:6.2f} s, natural epoch {r['natural_epoch_s']:6.2f} s: {r['stage_s'] / r['natural_epoch_s']:.2f} of an epoch; "
              f"the last natural epoch {r['last_natural_s']:6.2f} s", flush=True)


def main(classes=5000, n_max=200, valid_per_class=5, target=20000, quick=False, stage=False):
    torch.set_num_threads(2)
    if quick: classes, n_max, target = 500, 50, 2000
    rows = {}
    X, y, counts, ntr, nva = make_data(classes, n_max, valid_per_class, target)[:5]
    vocab = [f'c{i:04d}' for i in range(classes)]
    print(f'{classes:,} classes, {ntr:,} training items (counts {counts.max()} .. {counts.min()}), {nva:,} balanced validation items, '
          f'{target:,} unlabelled target items with reversed priors; torch threads {torch.get_num_threads()}\n')
    with Peak('build Datasets/DataLoaders', rows):
        labels = [vocab[i] for i in y]
        idx = list(range(len(y)))
        splits = [idx[:ntr], idx[ntr:ntr + nva]]
        dsets = Datasets(idx[:ntr + nva], tfms=[[lambda i: X[i]], [lambda i: labels[i], Categorize(vocab=vocab)]], splits=splits)
        dls = dsets.dataloaders(bs=256, num_workers=0)
        tgt_dl = dls.test_dl(idx[ntr + nva:])  # inputs only: estimate_priors never sees a label
    model = lambda: nn.Sequential(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), nn.Linear(64, classes))
    split = lambda m: [params(m[0]), params(m[1])]
    def mk(d=dls, **kw):
        l = Learner(d, model(), loss_func=CrossEntropyLossFlat(), opt_func=Adam, splitter=split, **kw)
        l.remove_cb(ProgressCallback); l.logger = noop  # no bars, no tables: only the timings print
        return l
    five = lambda T=None: [BalancedAccuracy(), MacroF1(), CohenKappa(), RocAuc(thresholds=T), AveragePrecision(thresholds=T)]
    torch.manual_seed(0)
    mk().fit(1, 1e-2)  # warm-up, untimed: the process's first fit pays one-off costs (allocator, kernels' first calls) that would flatter every ratio against it
    learn = mk()
    if stage: return stage_costs(mk, dls)
    if True:
        with Peak('plain fit, 1 epoch', rows): learn.fit(1, 1e-2)
        with Peak('validate(), no metrics', rows): learn.validate()
        learn.metrics = five()
        with Peak('validate(), five metrics, exact', rows): v = learn.validate()
        learn.metrics = five(1000)
        with Peak('validate(), five metrics, binned (thresholds=1000)', rows): vb = learn.validate()
        learn.metrics = []
        print(f'    values exact {np.round(v[1:], 4).tolist()}, binned {np.round(vb[1:], 4).tolist()}')
        l2 = mk(metrics=five())
        with Peak('fit with the five metrics, 1 epoch', rows): l2.fit(1, 1e-2)
        l3 = mk(dls.resampled('balanced'))
        with Peak(RES, rows): l3.fit(1, 1e-2)
        l4 = mk(cbs=BalancedFinetune())
        with Peak('plain fit, 2 epochs', rows): mk().fit(2, 1e-2)
        with Peak(BF, rows): l4.fit(2, 1e-2)
        with Peak('get_preds, no PriorShift', rows): learn.get_preds()
        learn.add_cb(PriorShift('uniform'))
        with Peak(PS, rows): learn.get_preds()
        learn.remove_cb(learn.prior_shift)
        with Peak(f'estimate_priors (bcts + EM) on {target:,} unlabelled items', rows): pi = learn.estimate_priors(tgt_dl)
        p_t = make_data(classes, n_max, valid_per_class, target)[5]
        tv = float(0.5 * (pi.float() - p_t.float()).abs().sum())
        print(f'    total variation to the true target priors {tv:.3f} (the training prior: {0.5 * float((torch.as_tensor(counts / counts.sum()) - p_t).abs().sum()):.3f})')
        with Peak('ImbalanceInterpretation.from_learner', rows): interp = ImbalanceInterpretation.from_learner(l4)
        with Peak('  its tables: per_class, shot_table, most_confused', rows): interp.per_class(); interp.shot_table(); interp.most_confused()[:10]
        with Peak('  its plots (distribution, recall vs frequency, confusion top 30)', rows):
            interp.plot_class_distribution(); interp.plot_recall_vs_frequency(); interp.plot_confusion_matrix(max_labels=30); plt.close('all')
        with Peak('learn.class_report() (one validation pass + the report)', rows): l4.class_report()
    r = lambda a, b: rows[a][0] / rows[b][0]
    print('\nratios:')
    print(f"  five metrics add {rows['validate(), five metrics, exact'][0] - rows['validate(), no metrics'][0]:.2f} s (exact) and "
          f"{rows['validate(), five metrics, binned (thresholds=1000)'][0] - rows['validate(), no metrics'][0]:.2f} s (binned) to a "
          f"{rows['validate(), no metrics'][0]:.2f} s validation pass (targets: 3 s and 1 s)")
    print(f"  fit with the five metrics / plain fit: {r('fit with the five metrics, 1 epoch', 'plain fit, 1 epoch'):.2f}x; "
          f"resampled / plain: {r(RES, 'plain fit, 1 epoch'):.2f}x; BalancedFinetune / plain (2 epochs): {r(BF, 'plain fit, 2 epochs'):.2f}x")
    print(f"  get_preds with PriorShift / without: {r(PS, 'get_preds, no PriorShift'):.2f}x")
    e = rows[f'estimate_priors (bcts + EM) on {target:,} unlabelled items']
    print(f"  estimate_priors {e[0]:.1f} s, peak +{e[1]:.2f} GB (targets: 30 s, 3 GB); interpretation "
          f"{sum(v[0] for k, v in rows.items() if k.startswith(('ImbalanceInterpretation', '  its'))):.1f} s (target 10 s)")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--classes', type=int, default=5000)
    ap.add_argument('--n-max', type=int, default=200)
    ap.add_argument('--valid-per-class', type=int, default=5)
    ap.add_argument('--target', type=int, default=20000)
    ap.add_argument('--quick', action='store_true', help='500 classes, counts 50..1, 2,000 target items: a smoke test of the script')
    ap.add_argument('--stage', action='store_true', help="only BalancedFinetune's stage against a natural epoch: the default, through the body, one pass over the cache, the last epoch's inputs")
    a = ap.parse_args()
    main(a.classes, a.n_max, a.valid_per_class, a.target, a.quick, a.stage)
