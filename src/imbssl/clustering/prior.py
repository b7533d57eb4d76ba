"""The cluster-sizes job: what clustering a pretrained model's features implies.

k-means (the project's backends) with K = the number of classes on the model's features of its
pretraining subset; the sorted cluster sizes against the sorted class sizes, their normalised
entropies and the NMI of clusters and classes. Methods built on batch statistics carry a prior
towards equal clusters (Assran et al. 2022, "The Hidden Uniform Cluster Prior"): on an imbalanced
subset it shows as clusters far more even than the classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imbssl.clustering.kmeans import Backend, Normalize, kmeans
from imbssl.clustering.partitions import normalize_features
from imbssl.clustering.sizes import normalised_entropy, sorted_sizes
from imbssl.core.artifacts import ClusterSizes, read_model, read_subset, write_cluster_sizes
from imbssl.evaluation.features import FeatureSettings, extract


@dataclass
class PriorClusterSettings:
    """The `prior_clusters` config section: the k-means of the prior measurement (K is the number of
    classes, never a setting)."""

    backend: Backend = "auto"  # auto | cuml | torch | sklearn, as clustering.backend
    n_init: int = 10  # k-means restarts (scikit-learn's default)
    max_iter: int = 300  # scikit-learn's default
    # l2 (our choice): every method compares its features by cosine, so k-means on the unit sphere
    normalize: Normalize = "l2"


def measure_cluster_sizes(model: str, train_data: str, subset: str, subset_name: str, method: str, seed: int,
                          out: str, settings: PriorClusterSettings, features: FeatureSettings | None = None,
                          provenance: dict | None = None) -> ClusterSizes:
    """k-means of `model`'s features of the images of `subset`, K = the classes of the split."""
    from sklearn.metrics import normalized_mutual_info_score

    from imbssl.data.device import StreamedImages, resolve_device
    from imbssl.data.store import load_split
    from imbssl.models.backbones import restore_backbone

    features_settings = features or FeatureSettings()
    device = resolve_device(features_settings.device)
    model_file = read_model(model)
    backbone = restore_backbone(model_file, device)
    split = load_split(train_data)
    indices, labels = read_subset(subset)
    features = extract(backbone, StreamedImages(split.images, indices, device), model_file.meta.mean,
                       model_file.meta.std, features_settings.batch_size_features, model_file.meta.image_size)
    k = split.num_classes
    result = kmeans(normalize_features(features, settings.normalize), k, seed, settings.backend, settings.n_init,
                    settings.max_iter)
    clusters, classes = sorted_sizes(result.assignments, k), sorted_sizes(labels, k)
    sizes = ClusterSizes(subset=subset_name, method=method, seed=seed, k=k, n=int(len(indices)),
                         cluster_sizes=clusters, class_sizes=classes, cluster_entropy=normalised_entropy(clusters),
                         class_entropy=normalised_entropy(classes),
                         nmi=float(normalized_mutual_info_score(np.asarray(labels), result.assignments)),
                         backend=result.info["backend"], collapsed=model_file.meta.collapsed_from_epoch is not None,
                         provenance=provenance or {})
    write_cluster_sizes(out, sizes)
    return sizes
