"MinorityAugment: rare-class items augmented in training only; inference (validate, get_preds, tta, test_dl) never reads labels."
import numpy as np, pytest, torch
from fastai.vision.all import ImageDataLoaders, vision_learner, Transform, aug_transforms
from fastai_imbalance.augment import MinorityAugment
from fastai_imbalance.core import class_counts
from conftest import tiny_arch


class Count(Transform):
    "A batch transform that counts the items it sees, and leaves them as they are"
    split_idx = 0
    def __init__(self): self.n = 0
    def encodes(self, x:torch.Tensor): self.n += len(x); return x


@pytest.mark.parametrize('nw', [0, 2])
def test_rare_items_in_training_only(lt_path, nw):
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=25, num_workers=nw)  # 250 items: no batch dropped
    c = Count()
    cb = MinorityAugment([c], max_count=10)
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=cb)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    counts = class_counts(dls).values
    assert c.n == counts[counts <= 10].sum()  # every rare item of the epoch once, nothing else
    c.n = 0
    with learn.no_bar():
        learn.validate(); learn.get_preds(); learn.tta(n=2)
        test_dl = dls.test_dl(dls.valid.items[:20])
        p, _ = learn.tta(dl=test_dl, n=2)  # unlabelled (x,) batches
    assert c.n == 0 and len(p) == 20


def test_in_batch_tfms_is_refused(lt_path):
    with pytest.raises(TypeError, match=r'pass it as cbs=MinorityAugment\(\.\.\.\)'):  # at the loaders' first pass, before any training
        ImageDataLoaders.from_folder(lt_path, valid='valid', bs=32, num_workers=0, batch_tfms=[MinorityAugment(aug_transforms())])


def test_rare_classes_by_name_and_bad_ones(lt_path):
    dls = ImageDataLoaders.from_folder(lt_path, valid='valid', bs=25, num_workers=0)
    cb = MinorityAugment([Count()], rare='9')  # one class by name, not the characters of a string
    learn = vision_learner(dls, tiny_arch, pretrained=False, cbs=cb)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert cb.rare_idx.tolist() == [dls.vocab.o2i['9']]
    with pytest.raises(ValueError, match=r'rare classes \[True\] are not in the vocab'), learn.no_bar(), learn.no_logging():
        learn.fit(1, cbs=MinorityAugment([Count()], rare=[True]))


def test_flags_are_refused_whatever_the_vocab():
    import numpy as np
    from types import SimpleNamespace
    from fastai.vision.all import Datasets, TfmdDL, Categorize
    ds = Datasets(list(range(6)), [[lambda o: o], [lambda o: o % 3, Categorize()]])  # an int vocab [0, 1, 2]: True == 1 would pass for class 1
    for rare in (True, [True], np.True_):
        cb = MinorityAugment([Count()], rare=rare)
        cb.learn = SimpleNamespace(dls=SimpleNamespace(train=TfmdDL(ds, bs=2)))
        with pytest.raises(ValueError, match='not flags'): cb.before_fit()
