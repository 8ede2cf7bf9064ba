# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""DSCA: dynamic spectral clustering of parameter blocks into a module library (MFTC).

A DSCA *block* is one component of a :class:`~rgft_jax.components.Partition` (a head, a
``d_b``-wide column / neuron block, a whole leaf), so ``m = partition.num_components``.

>>> import jax, jax.numpy as jnp
>>> from rgft_jax import dsca
>>> from rgft_jax.components import Partition, Rule
>>> params = {'w': jnp.zeros((8, 64))}
>>> part = Partition.build(params, [Rule('w', kind='block', axis=1, width=4)])
>>> cfg = dsca.DSCAConfig.for_partition(part, num_modules=2, embed_dim=2, sketch_dim=8)
>>> state = dsca.dsca_init(part, config=cfg)
>>> grads = {'w': jax.random.normal(jax.random.PRNGKey(0), (8, 64))}
>>> step = jax.jit(dsca.dsca_step, static_argnames=('partition', 'config'))
>>> state, lib = step(state, part, grads, cfg)
>>> lib.labels.shape, dsca.module_mask(lib, [0]).shape
((16,), (16,))
"""

from rgft_jax.dsca._dynamic import DSCAConfig as DSCAConfig
from rgft_jax.dsca._dynamic import DSCAState as DSCAState
from rgft_jax.dsca._dynamic import dsca_init as dsca_init
from rgft_jax.dsca._dynamic import dsca_rules as dsca_rules
from rgft_jax.dsca._dynamic import dsca_step as dsca_step
from rgft_jax.dsca._dynamic import dsca_update as dsca_update
from rgft_jax.dsca._graph import dense_similarity as dense_similarity
from rgft_jax.dsca._graph import knn_to_bcoo as knn_to_bcoo
from rgft_jax.dsca._graph import median_bandwidth as median_bandwidth
from rgft_jax.dsca._graph import normalized_adjacency as normalized_adjacency
from rgft_jax.dsca._graph import sparsify_knn as sparsify_knn
from rgft_jax.dsca._graph import sparsify_top_p as sparsify_top_p
from rgft_jax.dsca._kmeans import KMeansResult as KMeansResult
from rgft_jax.dsca._kmeans import kmeans as kmeans
from rgft_jax.dsca._kmeans import kmeans_plusplus as kmeans_plusplus
from rgft_jax.dsca._kmeans import merge_small as merge_small
from rgft_jax.dsca._kmeans import split_large as split_large
from rgft_jax.dsca._metrics import adjusted_rand_index as adjusted_rand_index
from rgft_jax.dsca._metrics import normalized_mutual_info as normalized_mutual_info
from rgft_jax.dsca._modules import Adjustment as Adjustment
from rgft_jax.dsca._modules import ModuleLibrary as ModuleLibrary
from rgft_jax.dsca._modules import adjust as adjust
from rgft_jax.dsca._modules import describe_modules as describe_modules
from rgft_jax.dsca._modules import diagnose as diagnose
from rgft_jax.dsca._modules import module_mask as module_mask
from rgft_jax.dsca._sketch import sketch as sketch
from rgft_jax.dsca._spectral import subspace_drift as subspace_drift
from rgft_jax.dsca._static import spectral_clustering as spectral_clustering
from rgft_jax.dsca._static import spectral_embedding as spectral_embedding

__all__ = [
    "Adjustment",
    "DSCAConfig",
    "DSCAState",
    "KMeansResult",
    "ModuleLibrary",
    "adjust",
    "adjusted_rand_index",
    "dense_similarity",
    "describe_modules",
    "diagnose",
    "dsca_init",
    "dsca_rules",
    "dsca_step",
    "dsca_update",
    "kmeans",
    "kmeans_plusplus",
    "knn_to_bcoo",
    "median_bandwidth",
    "merge_small",
    "module_mask",
    "normalized_adjacency",
    "normalized_mutual_info",
    "sketch",
    "sparsify_knn",
    "sparsify_top_p",
    "spectral_clustering",
    "spectral_embedding",
    "split_large",
    "subspace_drift",
]
