"""BalancedFinetune against plain training and fastai's oversampling on the long-tailed digits (or the rare-positive digits).

    python bench/bench_finetune.py [--seeds 5] [--epochs 10] [--imbalance 100] [--data lt|rare|many|photos] [--data-seed 0] [--methods a,b]

Same model (resnet18, pretrained=False), data, batch size, learning rate and total epoch budget for every
method; mean ± std over seeds of accuracy, balanced accuracy, macro-F1 and many/medium/few-shot class
accuracy (classes with >50, 10-50, <10 training images), on the balanced validation split, with this library's
metrics. Seeds are paired: each run seeds Python, numpy and torch before its loaders are made, so every method sees
the same batches at the same seed; the difference from plain CE is given per seed and with a 95% paired-t interval.
Each trained model is also scored with PriorShift('uniform') added (shifted from the prior it was trained under), paired
with itself: after a balanced stage the shift must change nothing (no double correction).
"""
import argparse, time, warnings, json  # the recipes name `reinit` explicitly: its default changed (False since the paired study of 2026-12-02)
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from scipy import stats
from fastai.vision.all import *
from fastai.callback.data import WeightedDL
from fastai_imbalance.all import *
from fastai_imbalance.finetune import BalancedFinetune
from fastai_imbalance.datasets import photos_lt
from fastai_imbalance.bench import small_convnet, shot_thresholds


def shot_groups(counts):
    c = np.asarray(counts); many, few = shot_thresholds(c)  # the bench's split: > half and < a tenth of the largest class below 200
    return {'many': c > many, 'medium': (c >= few) & (c <= many), 'few': c < few}


def evaluate(learn, counts):
    with learn.no_bar(): p, t = learn.get_preds()
    ba, f1 = BalancedAccuracy(), MacroF1()
    for m in (ba, f1): m.update(p, t)
    tp, sup, _ = f1.counts
    rec = (tp / sup.clamp_min(1)).numpy()
    res = dict(accuracy=float((p.argmax(1) == t).double().mean()), balanced_accuracy=ba.value, macro_f1=f1.value)
    for g, m in shot_groups(counts).items(): res[f'{g}_shot'] = rec[m].mean() if m.any() else np.nan
    return res


class StageTimer(Callback):
    "Wall seconds of each epoch's training phase, from its before_epoch (where BalancedFinetune switches, and a cached stage computes its cache) to its after_train, and whether it was a stage epoch"
    order = -50  # before every callback's before_epoch
    def before_fit(self): self.rows = []
    def before_epoch(self): self.t = time.perf_counter()
    def after_train(self):
        bf = next((cb for cb in self.learn.cbs if isinstance(cb, BalancedFinetune)), None)
        self.rows.append((time.perf_counter() - self.t, bf is not None and bf.active and bf.stage != 'natural'))
    def summary(self):
        "Mean natural epoch (the first and the last left out: the first pays the process's one-off costs, the last keeps the inputs for cache='last_epoch'), the last natural epoch, and the whole stage, in seconds"
        nat = [(i, t) for i,(t,s) in enumerate(self.rows) if not s]
        mid = [t for i,t in nat[1:-1]] or [t for i,t in nat]
        return dict(natural_epoch_s=float(np.mean(mid)), last_natural_s=float(nat[-1][1]), stage_s=float(sum(t for t,s in self.rows if s)))


def run(method, path, seed, epochs, lr=3e-3, bs=32, arch=resnet18, size=None):
    set_seed(seed, reproducible=True)
    dblock = DataBlock((ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                       splitter=GrandparentSplitter(valid_name='valid'), item_tfms=Resize(size) if size else None)
    if method == "fastai weighted_dataloaders":
        items = get_image_files(path)
        y = np.array([parent_label(o) for o in items]); cnt = pd.Series(y).value_counts()
        dls = dblock.weighted_dataloaders(path, wgts=1 / cnt[y].values, bs=bs, num_workers=0)
    else: dls = dblock.dataloaders(path, bs=bs, num_workers=0)
    loss = LogitAdjustedLoss(dls) if method == 'LogitAdjustedLoss (whole fit)' else None
    if method == 'ResampledDL balanced (whole fit)': dls = dls.resampled('balanced')
    cbs = {'plain CE': [], "fastai weighted_dataloaders": [], 'LogitAdjustedLoss (whole fit)': [], 'ResampledDL balanced (whole fit)': [],
           'BalancedFinetune head (cRT)': [BalancedFinetune(train='head', reinit=True)],
           'BalancedFinetune head without re-init': [BalancedFinetune(train='head', reinit=False)],
           'BalancedFinetune head (sqrt stage)': [BalancedFinetune(train='head', reinit=False, strategy='sqrt')],
           'BalancedFinetune head for half the fit': [BalancedFinetune(train='head', pct=.5, reinit=True)],
           'BalancedFinetune stage = LogitAdjustedLoss (all layers)': [BalancedFinetune(mode='drw', loss_func=LogitAdjustedLoss(dls))],
           'BalancedFinetune stage = LogitAdjustedLoss (head)': [BalancedFinetune(mode='drw', train='head', loss_func=LogitAdjustedLoss(dls))],
           'BalancedFinetune classifier (Kang et al. cRT)': [BalancedFinetune(train='classifier', reinit=True, cache=False)],
           'BalancedFinetune classifier without re-init': [BalancedFinetune(train='classifier', reinit=False, cache=False)],
           'BalancedFinetune classifier (cached)': [BalancedFinetune(train='classifier', reinit=False, cache=True, n=None, bs=bs)],
           'BalancedFinetune classifier (cached; 10 passes)': [BalancedFinetune(train='classifier', reinit=False, cache=True, n=10 * len(dls.train_ds), bs=bs)],
           'BalancedFinetune classifier (cached; 10 passes in 10x batches)': [BalancedFinetune(train='classifier', reinit=False, cache=True, n=10 * len(dls.train_ds), bs=10 * bs)],
           'BalancedFinetune classifier (cached; 10 passes in 3x batches)': [BalancedFinetune(train='classifier', reinit=False, cache=True, n=10 * len(dls.train_ds), bs=3 * bs)],
           'BalancedFinetune classifier (last-epoch cache)': [BalancedFinetune(train='classifier', reinit=False, cache='last_epoch', n=None, bs=bs)],
           'BalancedFinetune classifier (last-epoch cache; 10 passes)': [BalancedFinetune(train='classifier', reinit=False, cache='last_epoch', n=10 * len(dls.train_ds), bs=bs)],
           'BalancedFinetune tau-norm (no stage)': [BalancedFinetune(mode='tau')],
           'BalancedFinetune scales (LWS; cached)': [BalancedFinetune(train='scales', cache=True, n=None, bs=bs)],
           'BalancedFinetune all layers': [BalancedFinetune(train='all')],
           'DRW (BalancedFinetune mode=drw)': [BalancedFinetune(mode='drw')]}[method]
    learn = vision_learner(dls, arch, pretrained=False, cbs=cbs, loss_func=loss)
    t, timer = time.perf_counter(), StageTimer()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr, cbs=timer)
    res = evaluate(learn, class_counts(dls).values)
    res['seconds'] = time.perf_counter() - t
    res.update(timer.summary())
    bf = next((c for c in cbs if isinstance(c, BalancedFinetune) and c.mode == 'tau'), None)
    if bf is not None: res['tau'] = bf.tau_chosen  # the exponent chosen on the training items
    learn.add_cb(PriorShift('uniform'))  # the same weights, shifted from the prior they were trained under: the double-correction check
    shifted = evaluate(learn, class_counts(dls).values)
    shifted.update(seconds=0., natural_epoch_s=res['natural_epoch_s'], stage_s=0.)
    return res, shifted


METHODS = ['plain CE', "fastai weighted_dataloaders", 'LogitAdjustedLoss (whole fit)', 'ResampledDL balanced (whole fit)',
           'BalancedFinetune head (cRT)', 'BalancedFinetune classifier (Kang et al. cRT)', 'BalancedFinetune all layers', 'DRW (BalancedFinetune mode=drw)',
           'BalancedFinetune head without re-init', 'BalancedFinetune head for half the fit', 'BalancedFinetune stage = LogitAdjustedLoss (all layers)',
           'BalancedFinetune stage = LogitAdjustedLoss (head)', 'BalancedFinetune head (sqrt stage)',
           'BalancedFinetune classifier without re-init', 'BalancedFinetune classifier (cached)', 'BalancedFinetune classifier (cached; 10 passes)',
           'BalancedFinetune classifier (last-epoch cache)', 'BalancedFinetune classifier (last-epoch cache; 10 passes)',
           'BalancedFinetune tau-norm (no stage)', 'BalancedFinetune scales (LWS; cached)', 'BalancedFinetune classifier (cached; 10 passes in 10x batches)',
           'BalancedFinetune classifier (cached; 10 passes in 3x batches)']


def paired(d, base, col='balanced_accuracy'):
    "Mean paired difference (points) and its 95% paired-t interval"
    diff = 100 * (d[col] - base[col])
    h = stats.t.ppf(0.975, len(diff) - 1) * diff.std() / np.sqrt(len(diff)) if len(diff) > 1 else np.nan
    return diff, diff.mean(), h


def main(seeds=5, epochs=10, imbalance=100, out=None, data='lt', methods=None, data_seed=0, first_seed=0, saved=None, against=None):
    torch.set_num_threads(2)
    path = (digits_lt(imbalance=imbalance, seed=data_seed) if data == 'lt' else digits_rare() if data == 'rare' else
            photos_lt(seed=data_seed) if data == 'photos' else glyphs_lt())
    kw = dict(arch=small_convnet, size=24, bs=64) if data == 'many' else {}
    unknown = set(methods.split(',') if methods else []) - set(METHODS)
    methods = METHODS if methods is None else ['plain CE'] + [m for m in METHODS if m in methods.split(',') and m != 'plain CE']
    if unknown: raise SystemExit(f'unknown methods {sorted(unknown)}: names are {METHODS}')
    old = pd.concat([pd.read_csv(f) for f in saved.split(',')]) if saved else pd.DataFrame(columns=['method', 'seed'])
    old = old[old.seed.isin(range(first_seed, first_seed + seeds))].drop_duplicates(['method', 'seed'])
    full = old.groupby('method').seed.nunique() == seeds
    old = old[old.method.isin(full[full].index)]  # a saved method that misses some of the seeds asked for is left out (or run again, if asked for)
    # runs are deterministic per seed (the same seed gives the same batches and weights: plain CE reproduces its saved rows to the digit), so saved rows pair with new ones
    run_now = [m for m in methods if m not in set(old.method)]
    cc = class_counts(ImageDataLoaders.from_folder(path, valid='valid', num_workers=0))
    print(f"{'digits_lt(imbalance=%g, seed=%d)' % (imbalance, data_seed) if data == 'lt' else 'digits_rare()' if data == 'rare' else 'photos_lt(seed=%d)' % data_seed if data == 'photos' else 'glyphs_lt()'}: "
          f"train {cc.tolist() if len(cc) <= 20 else f'{len(cc)} classes, {cc.max()}..{cc.min()}'}; "
          f"{'small_convnet (size 24, batch 64)' if data == 'many' else 'resnet18'}, {epochs} epochs fit_one_cycle, {seeds} seeds\n")
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        for m in run_now:
            r, rs = run(m, path, seed, epochs, **kw); r.update(method=m, seed=seed); rows.append(r)
            rs.update(method=f'{m} + PriorShift(uniform)', seed=seed); rows.append(rs)
            print(f'  seed {seed} {m:56s} bal.acc {r["balanced_accuracy"]:.3f}, then PriorShift(uniform) {rs["balanced_accuracy"]:.3f}  ({r["seconds"]:.0f} s)'
                  + (f'; tau chosen {r["tau"]:g}' if 'tau' in r else ''), flush=True)
    df = pd.concat([old, pd.DataFrame(rows)], ignore_index=True)
    methods = list(dict.fromkeys(['plain CE'] + [m for m in old.method if not m.endswith(' + PriorShift(uniform)')] + methods))
    missing = [(m, s) for m in methods for s in range(first_seed, first_seed + seeds) if not ((df.method == m) & (df.seed == s)).any()]
    if missing: raise SystemExit(f'no row for {missing[:5]}: the saved runs must cover the seeds asked for')
    cols = ['accuracy', 'balanced_accuracy', 'macro_f1', 'many_shot', 'medium_shot', 'few_shot']
    g = df.groupby('method', sort=False)[cols]
    table = g.mean().map(lambda v: f'{100*v:.1f}') + ' ± ' + g.std().map(lambda v: f'{100*v:.1f}')
    print('\n' + table.to_string())
    base = df[df.method == 'plain CE'].set_index('seed')
    for m in methods[1:] + [f'{m} + PriorShift(uniform)' for m in methods]:
        d = df[df.method == m].set_index('seed')
        diff, mean, h = paired(d, base)
        print(f'{m:34s} balanced accuracy {mean:+.1f} points vs plain CE, 95% interval [{mean - h:+.1f}, {mean + h:+.1f}] '
              f'(per seed: {" ".join(f"{v:+.1f}" for v in diff)}); many-shot {100*(d.many_shot - base.many_shot).mean():+.1f}')
    singles = [m for m in ('plain CE + PriorShift(uniform)', 'LogitAdjustedLoss (whole fit)', 'ResampledDL balanced (whole fit)') if m in set(df.method)]
    for m in [m for m in methods if m.startswith('BalancedFinetune')]:  # the default's bar: it must reach the best single technique
        for o in singles:
            diff, mean, h = paired(df[df.method == m].set_index('seed'), df[df.method == o].set_index('seed'))
            print(f'{m} minus {o}: {mean:+.1f} points of balanced accuracy, 95% interval [{mean - h:+.1f}, {mean + h:+.1f}]')
    for o in [o for o in (against or '').split(',') if o]:  # the new methods against other stages (the default, or the option they would replace)
        if o not in set(df.method): raise SystemExit(f'--against {o!r}: no such method in these runs')
        for m in [m for m in run_now if m != o]:
            diff, mean, h = paired(df[df.method == m].set_index('seed'), df[df.method == o].set_index('seed'))
            print(f'{m} minus {o}: {mean:+.1f} points of balanced accuracy, 95% interval [{mean - h:+.1f}, {mean + h:+.1f}]; '
                  f'many-shot {100 * (df[df.method == m].set_index("seed").many_shot - df[df.method == o].set_index("seed").many_shot).mean():+.1f}')
    ms = [m for m in methods if m in ('BalancedFinetune head (cRT)', 'BalancedFinetune classifier (Kang et al. cRT)')]  # both re-initialise: only the layers trained differ
    if len(ms) == 2:
        a, b = (df[df.method == m].set_index('seed') for m in ms)
        diff, mean, h = paired(b, a)
        print(f'classifier minus head (both cRT): {mean:+.1f} points of balanced accuracy, 95% interval [{mean - h:+.1f}, {mean + h:+.1f}]')
    for m in methods:  # the shift from the prior the model was trained under never makes it worse on a balanced set (no double correction)
        a, b = (df[df.method == x].set_index('seed') for x in (m, f'{m} + PriorShift(uniform)'))
        diff, mean, h = paired(b, a)
        print(f'{m:34s} + PriorShift(uniform) minus alone: {mean:+.1f} points of balanced accuracy, 95% interval [{mean - h:+.1f}, {mean + h:+.1f}]')
    staged = [m for m in methods if m.startswith('BalancedFinetune')]
    if staged: print('\nthe stage\'s cost (training phases, from the stage\'s first before_epoch; cache included), against one natural epoch of the same fit:')
    for m in staged:
        d = df[df.method == m]
        r = d.stage_s / d.natural_epoch_s
        k = (d.last_natural_s - d.natural_epoch_s) / d.natural_epoch_s  # what keeping the last natural epoch's inputs adds to it (noise for the others)
        print(f'  {m:56s} stage {d.stage_s.mean():6.1f} s, natural epoch {d.natural_epoch_s.mean():5.1f} s: {r.mean():.2f} of an epoch '
              f'(seeds: {r.min():.2f} .. {r.max():.2f}); the last natural epoch {k.mean():+.2f} of an epoch over the others')
    if out: df.to_csv(out, index=False)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seeds', type=int, default=5)
    ap.add_argument('--first-seed', type=int, default=0)
    ap.add_argument('--epochs', type=int, default=10)
    ap.add_argument('--imbalance', type=float, default=100)
    ap.add_argument('--out', default=None)
    ap.add_argument('--data', default='lt', choices=['lt', 'rare', 'many', 'photos'],
                    help="many: glyphs_lt's 1,000 classes with the bench's small_convnet; photos: photos_lt's 27 photo-region classes (150:2), the confirmation set")
    ap.add_argument('--data-seed', type=int, default=0, help="digits_lt's scan shuffle: another seed (and --imbalance) gives a set nothing was tuned on")
    ap.add_argument('--methods', default=None, help='comma-separated subset (plain CE is always run, as the baseline, unless --saved has it)')
    ap.add_argument('--against', default=None, help='comma-separated methods (run now or saved) to compare the new ones with, paired by seed')
    ap.add_argument('--saved', default=None, help='comma-separated CSVs of earlier runs on the same data and epochs: their methods are not run again and are paired by seed with the new ones')
    main(**vars(ap.parse_args()))
