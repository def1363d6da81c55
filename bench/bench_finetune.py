"""BalancedFinetune against plain training and fastai's oversampling on the long-tailed digits.

    python bench/bench_finetune.py [--seeds 5] [--epochs 10] [--imbalance 100]

Same model (resnet18, pretrained=False), data, batch size, learning rate and total epoch budget for every
method; mean ± std over seeds of accuracy, balanced accuracy, macro-F1 and many/medium/few-shot class
accuracy (classes with >50, 10-50, <10 training images), on the balanced validation split.
"""
import argparse, time, warnings, json
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score
from fastai.vision.all import *
from fastai.callback.data import WeightedDL
from fastai_imbalance.all import *
from fastai_imbalance.finetune import BalancedFinetune


def shot_groups(counts):
    c = np.asarray(counts)
    return {'many': c > 50, 'medium': (c >= 10) & (c <= 50), 'few': c < 10}


def evaluate(learn, counts):
    with learn.no_bar(): p, t = learn.get_preds()
    p, t = p.argmax(1).numpy(), t.numpy()
    rec = recall_score(t, p, average=None, labels=np.arange(len(counts)), zero_division=0)
    res = dict(accuracy=accuracy_score(t, p), balanced_accuracy=balanced_accuracy_score(t, p), macro_f1=f1_score(t, p, average='macro'))
    for g, m in shot_groups(counts).items(): res[f'{g}_shot'] = rec[m].mean()
    return res


def run(method, path, seed, epochs, lr=3e-3, bs=32):
    set_seed(seed, reproducible=True)
    dblock = DataBlock((ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                       splitter=GrandparentSplitter(valid_name='valid'))
    if method == "fastai weighted_dataloaders":
        items = get_image_files(path)
        y = np.array([parent_label(o) for o in items]); cnt = pd.Series(y).value_counts()
        dls = dblock.weighted_dataloaders(path, wgts=1 / cnt[y].values, bs=bs, num_workers=0)
    else: dls = dblock.dataloaders(path, bs=bs, num_workers=0)
    cbs = {'plain CE': [], "fastai weighted_dataloaders": [],
           'BalancedFinetune head (cRT)': [BalancedFinetune(train='head')],
           'BalancedFinetune all layers': [BalancedFinetune(train='all')],
           'DRW (BalancedFinetune mode=drw)': [BalancedFinetune(mode='drw')]}[method]
    learn = vision_learner(dls, resnet18, pretrained=False, cbs=cbs)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr)
    res = evaluate(learn, class_counts(dls).values)
    res['seconds'] = time.perf_counter() - t
    return res


METHODS = ['plain CE', "fastai weighted_dataloaders", 'BalancedFinetune head (cRT)', 'BalancedFinetune all layers', 'DRW (BalancedFinetune mode=drw)']


def main(seeds=5, epochs=10, imbalance=100, out=None):
    torch.set_num_threads(2)
    path = digits_lt(imbalance=imbalance)
    print(f"digits_lt(imbalance={imbalance}): train {class_counts(ImageDataLoaders.from_folder(path, valid='valid', num_workers=0)).tolist()}; "
          f'resnet18, {epochs} epochs fit_one_cycle, {seeds} seeds\n')
    rows = []
    for seed in range(seeds):
        for m in METHODS:
            r = run(m, path, seed, epochs); r.update(method=m, seed=seed); rows.append(r)
            print(f'  seed {seed} {m:34s} bal.acc {r["balanced_accuracy"]:.3f}  ({r["seconds"]:.0f} s)', flush=True)
    df = pd.DataFrame(rows)
    cols = ['accuracy', 'balanced_accuracy', 'macro_f1', 'many_shot', 'medium_shot', 'few_shot']
    g = df.groupby('method', sort=False)[cols]
    table = g.mean().map(lambda v: f'{100*v:.1f}') + ' ± ' + g.std().map(lambda v: f'{100*v:.1f}')
    print('\n' + table.to_string())
    base = df[df.method == 'plain CE'].set_index('seed')
    for m in METHODS[1:]:
        d = df[df.method == m].set_index('seed')
        print(f'{m:34s} balanced accuracy {100*(d.balanced_accuracy - base.balanced_accuracy).mean():+.1f} points vs plain CE '
              f'(per seed: {" ".join(f"{100*v:+.1f}" for v in (d.balanced_accuracy - base.balanced_accuracy))}); '
              f'many-shot {100*(d.many_shot - base.many_shot).mean():+.1f}')
    if out: df.to_csv(out, index=False)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seeds', type=int, default=5)
    ap.add_argument('--epochs', type=int, default=10)
    ap.add_argument('--imbalance', type=float, default=100)
    ap.add_argument('--out', default=None)
    main(**vars(ap.parse_args()))
