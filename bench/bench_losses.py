"""Imbalance-aware losses side by side, same model and budget, several seeds.

    python bench/bench_losses.py [--seeds 5] [--epochs 8] [--ml-epochs 5] [--only single|multi]

Single-label: digits_lt(imbalance=100), resnet18 (pretrained=False), fit_one_cycle(epochs, 3e-3), batch 32; balanced
accuracy and macro-F1 (this library's metrics, scikit-learn's definitions) on the balanced validation scans. LDAM as its paper
sets it up: a cosine classifier (`cosine_classifier`) and s=30. Plain cross-entropy, fastai's FocalLossFlat
(plain and with weight=), and this library's losses (Balanced Softmax is logit adjustment with tau=1: the same loss).
Multilabel: digits_multilabel(n_train=500), same model, batch 32; macro AUPRC (exact, labels without positives skipped)
and the ratio of predicted to true positive labels on the validation mosaics (each loss's own decodes: threshold 0.5
on the sigmoid, top-k for the softmax loss). Mean ± std over the seeds; a loss "helped" where its mean beats the
baseline's by more than twice the standard error of the difference. Paired seeds: each run reseeds Python, numpy, torch and
the loaders' own random generators, so the same seed gives every loss the same initialisation and the same batches.
"""
import argparse, random, time, warnings
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastai.vision.all import (ImageDataLoaders, vision_learner, resnet18, set_seed, CrossEntropyLossFlat, BCEWithLogitsLossFlat,
                               FocalLossFlat)
from fastai_imbalance.core import class_weights, pos_weight
from fastai_imbalance.datasets import digits_lt, digits_multilabel
from fastai_imbalance.finetune import BalancedFinetune
from fastai_imbalance.metrics import AveragePrecision, BalancedAccuracy, MacroF1
from fastai_imbalance.losses import *


def fit(dls, loss, epochs, seed, cbs=None, setup=None):
    set_seed(seed, reproducible=True)
    for dl in dls.loaders: dl.rng = random.Random(seed)  # fastai seeds a loader's generator once, when it is made: without this, runs are paired on the initialisation only
    learn = vision_learner(dls, resnet18, pretrained=False, loss_func=loss, cbs=cbs)
    if setup is not None: setup(learn)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, 3e-3)
        p, y = learn.get_preds()
    return learn, p, y


def single(seeds, epochs):
    path = digits_lt(imbalance=100)
    dls = ImageDataLoaders.from_folder(path, valid='valid', bs=32, num_workers=0)
    w, n_drw = class_weights(dls), max(1, epochs // 4)
    losses = {
        'cross-entropy': lambda: (CrossEntropyLossFlat(), None),
        'fastai FocalLossFlat': lambda: (FocalLossFlat(gamma=2.), None),
        'fastai FocalLossFlat(weight=balanced)': lambda: (FocalLossFlat(gamma=2., weight=w), None),
        'FocalLoss(alpha=balanced)': lambda: (FocalLoss(2., alpha=w), None),
        'ClassBalancedLoss (beta 0.999)': lambda: (ClassBalancedLoss(dls, beta=.999), None),
        'ClassBalancedLoss focal (beta 0.999)': lambda: (ClassBalancedLoss(dls, beta=.999, gamma=1.), None),
        'LogitAdjustedLoss (tau 1) = BalancedSoftmax': lambda: (LogitAdjustedLoss(dls), None),
        'LDAMLoss (cosine classifier, s 30)': lambda: (LDAMLoss(dls), None),
        f'LDAM-DRW (last {n_drw} epochs)': lambda: (LDAMLoss(dls), BalancedFinetune(mode='drw', epochs=n_drw, loss_func=LDAMLoss(dls, weight=class_weights(dls, 'effective', beta=.9999)))),
    }
    rows = []
    for name, mk in losses.items():
        for s in range(seeds):
            t = time.perf_counter()
            loss, cb = mk()
            _, p, y = fit(dls, loss, epochs, s, cbs=cb, setup=(lambda l: cosine_classifier(l.model)) if isinstance(loss, LDAMLoss) else None)
            ba, f1 = BalancedAccuracy(), MacroF1()
            for m in (ba, f1): m.update(p, y)
            rows.append(dict(loss=name, seed=s, bacc=ba.value, macro_f1=f1.value, time=time.perf_counter() - t))
        print(f'  {name}: done ({seeds} seeds)', flush=True)
    return report(pd.DataFrame(rows), ['bacc', 'macro_f1'], 'cross-entropy', f'single-label: digits_lt(100), resnet18, {epochs} epochs, {seeds} seeds')


def multi(seeds, epochs):
    path = digits_multilabel(n_train=500)
    df = pd.read_csv(path/'labels.csv', keep_default_na=False)
    dls = ImageDataLoaders.from_df(df, path, fn_col='fname', label_col='labels', label_delim=' ', valid_col='is_valid', bs=32, num_workers=0)
    losses = {
        'BCE': lambda: BCEWithLogitsLossFlat(),
        'BCE pos_weight (full neg/pos)': lambda: BCEWithLogitsLossFlat(pos_weight=pos_weight(dls)),
        'PosWeightBCELoss (sqrt, cap 10)': lambda: PosWeightBCELoss(dls, power=.5, max_weight=10.),
        'FocalBCELoss (gamma 2)': lambda: FocalBCELoss(2.),
        'AsymmetricLoss (0, 4, 0.05)': lambda: AsymmetricLoss(),
        'SoftmaxMultilabelLoss (top-k)': lambda: SoftmaxMultilabelLoss(dls),
    }
    rows = []
    for name, mk in losses.items():
        for s in range(seeds):
            t = time.perf_counter()
            loss = mk()
            learn, p, y = fit(dls, loss, epochs, s)
            ap = AveragePrecision(activation=None); ap.update(p, y)
            dec = learn.loss_func.decodes(p)
            rows.append(dict(loss=name, seed=s, macro_auprc=ap.value, pred_over_true=float(dec.float().sum() / y.sum()), time=time.perf_counter() - t))
        print(f'  {name}: done ({seeds} seeds)', flush=True)
    return report(pd.DataFrame(rows), ['macro_auprc', 'pred_over_true'], 'BCE', f'multilabel: digits_multilabel(n_train=500), resnet18, {epochs} epochs, {seeds} seeds')


def report(df, cols, base, title):
    g = df.groupby('loss', sort=False)
    out = pd.DataFrame({c: [f'{m:.3f} ± {s:.3f}' for m, s in zip(g[c].mean(), g[c].std())] for c in cols}, index=g[cols[0]].mean().index)
    out['time/run'] = [f'{t:.0f} s' for t in g['time'].mean()]
    b = df[df.loss == base].set_index('seed')[cols[0]]
    verdict = []
    for name, d in g:
        diff = d.set_index('seed')[cols[0]] - b  # paired by seed
        se = diff.std() / np.sqrt(len(diff)) if len(diff) > 1 else np.nan
        verdict.append('baseline' if name == base else 'helped' if diff.mean() > 2 * se else 'hurt' if diff.mean() < -2 * se else 'no clear change')
    out[f'vs {base} ({cols[0]})'] = verdict
    print(f'\n{title}\n{out.to_string()}\n', flush=True)
    return out


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seeds', type=int, default=5)
    ap.add_argument('--epochs', type=int, default=8)
    ap.add_argument('--ml-epochs', type=int, default=5)
    ap.add_argument('--only', choices=['single', 'multi'])
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.only != 'multi': single(a.seeds, a.epochs)
    if a.only != 'single': multi(a.seeds, a.ml_epochs)
