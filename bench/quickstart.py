"""The smallest working example (`make demo`): long-tailed digits, plain vs class-weighted cross-entropy.

Writes `digits_lt` (100:1), reads its class counts from the `DataLoaders` (no image opened), and trains
the same resnet18 (pretrained=False) twice with the same seed and epochs: plain `CrossEntropyLossFlat`
and the same loss weighted by `class_weights`. Prints accuracy and balanced accuracy (scikit-learn) on the
balanced validation split. One seed, small budget: a demonstration, not a benchmark.
"""
import argparse, time, warnings
warnings.filterwarnings('ignore')
from fastai.vision.all import *
from sklearn.metrics import balanced_accuracy_score, accuracy_score
from fastai_imbalance.all import *


def run(dls, loss_func, epochs, seed):
    set_seed(seed, reproducible=True)
    learn = vision_learner(dls, resnet18, pretrained=False, loss_func=loss_func)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, 3e-3)
        preds, targs = learn.get_preds(dl=dls.valid)
    p, y = preds.argmax(1).numpy(), targs.numpy()
    return accuracy_score(y, p), balanced_accuracy_score(y, p), time.perf_counter() - t


def main(epochs=10, seed=0):
    path = digits_lt(imbalance=100)
    dls = ImageDataLoaders.from_folder(path, valid='valid', bs=32, num_workers=0, seed=seed)
    counts = class_counts(dls)
    w = class_weights(counts)
    print(pd.DataFrame({'train images': counts.astype(str), 'balanced weight': [f'{o:.2f}' for o in w.tolist()]}).T.to_string())
    print(f'\nimbalance ratio {imbalance_ratio(counts):.0f}:1, {counts.sum()} training images; validation: 50 per digit\n')
    for name, lf in (('plain cross-entropy', CrossEntropyLossFlat()), ('class-weighted cross-entropy', CrossEntropyLossFlat(weight=w))):
        acc, bacc, t = run(dls, lf, epochs, seed)
        print(f'{name:30s} accuracy {acc:.3f}  balanced accuracy {bacc:.3f}  ({epochs} epochs, {t:.0f} s)')


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--seed', type=int, default=0)
    main(**vars(p.parse_args()))
