"The default's change (2026-12-05): BalancedFinetune() now retrains the classifier on its cached inputs. The saved 'BalancedFinetune()' rows were the stage through the body, the recipe now named 'BalancedFinetune(cache=False)' (and cRT's, 'BalancedFinetune(cache=False, reinit=True) (cRT)'); the new default's rows come from the re-run (fastai-imbalance-bench --task T --methods 'BalancedFinetune()' --seeds 5 --out /tmp/bench_bf_T)"
import matplotlib; matplotlib.use('Agg')
from fastai_imbalance.bench import load_results, combine_results, save_results, method_settings
order = list(method_settings)
renamed = {'BalancedFinetune()': 'BalancedFinetune(cache=False)', 'BalancedFinetune(reinit=True) (cRT)': 'BalancedFinetune(cache=False, reinit=True) (cRT)'}
for task in ('single', 'many', 'rare'):
    old = load_results(f'bench/results/{task}')
    a = dict(old.attrs)
    old = old.replace({'method': renamed})
    old.attrs = a; old.attrs['settings'] = {m: method_settings.get(m, '') for m in old.method.unique()}
    res = combine_results(old, load_results(f'/tmp/bench_bf_{task}'))
    res = res.sort_values('method', key=lambda c: c.map(order.index), kind='stable').reset_index(drop=True)
    res.attrs = dict(res.attrs); res.attrs['settings'] = {m: method_settings.get(m, '') for m in res.method.unique()}
    save_results(res, f'bench/results/{task}')
    print(task, list(res.method.unique()), res.groupby('method', sort=False).size().tolist())
