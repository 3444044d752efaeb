"""neuralspec: spectra of neural kernels.

A small library behind the course *Spectral Signature of Neural Kernels*:
random Fourier features and MLPs, their feature Gram matrices, conjugate
kernels (CK) and neural tangent kernels (NTK), the spectra of those kernels,
and what the spectra predict about training.
"""
from . import analytic, memory
from .kernels import conjugate_kernel, feature_kernel, readout_features
from .models import LFF, MLP, RFF, RFFMLP, Erf, NTKLinear, Sine, get_activation
from .models import ScaledLinear, mup_layer
from .layers import (ACTIVATION_RULES, ActivationOp, ActivationRule, LinearRule, activation_rule, network_plan,
                     register_activation, unregister_activation)
from .limits import LimitKernels, limit_kernels
from .plotting import plot_eigenfunctions, plot_features, plot_kernel, plot_spectrum, use_style
from .spectrum import effective_rank, eigenvalues, eigh, numerical_floor, numerical_rank
from .utils import default_device, on_colab, set_seed, torch_threads
from .ntk import ntk, ntk_by_layer, ntk_method
from .scale import (BlockKernelOperator, DenseKernelOperator, KernelOperator, MatrixFreeNTKOperator,
                    kernel_operator, ntk_matvec, ntk_operator, top_eigenpairs)
from .data import (PowerLawFit, circle_data, circle_grid, circle_spectrum, fit_power_law,
                   fourier_modes, frequency_amplitudes, gratings, sine_data, sum_of_sines)
from .training import (TrainResult, check_learning_rate, mse_loss, ntk_lambda_max, predict_residuals,
                       project_residuals, stability_limit, time_to_learn, train)
from .sphere import (CosineKernel, SphereSpectrum, gegenbauer, limit_kernel_of_cosine, sphere_data,
                     sphere_harmonic_dimension, sphere_multiplicity, sphere_spectrum)
from .learning import LearningCurve, kernel_regression, learning_curve, target_power

from .motion import OutputScaled, kernel_alignment, relative_kernel_change, train_to_loss
from .memory import KernelTooLargeError
from .nystrom import eigenpair_residuals

try:  # the version is declared once, in pyproject.toml
    from importlib.metadata import PackageNotFoundError, version as _version

    __version__ = _version("neuralspec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    # models
    "LFF", "RFF", "RFFMLP", "MLP", "NTKLinear", "Sine", "Erf", "get_activation",
    # layer rules and the infinite-width limit
    "network_plan", "LinearRule", "ActivationOp", "ActivationRule", "activation_rule",
    "register_activation", "unregister_activation", "ACTIVATION_RULES", "limit_kernels", "LimitKernels",
    # kernels
    "feature_kernel", "conjugate_kernel", "readout_features",
    # spectra
    "eigh", "eigenvalues", "numerical_floor", "numerical_rank", "effective_rank",
    # figures
    "plot_kernel", "plot_spectrum", "plot_eigenfunctions", "plot_features", "use_style",
    # utilities
    "set_seed", "default_device", "on_colab", "torch_threads",
    "analytic",
    # neural tangent kernel
    "ntk", "ntk_by_layer", "ntk_method",
    # large spectra and matrix-free NTK
    "top_eigenpairs", "kernel_operator", "ntk_operator", "ntk_matvec", "KernelOperator",
    "DenseKernelOperator", "BlockKernelOperator", "MatrixFreeNTKOperator", "eigenpair_residuals",
    # memory guard
    "memory", "KernelTooLargeError",
    # training and spectral bias
    "train", "TrainResult", "mse_loss", "ntk_lambda_max", "stability_limit", "check_learning_rate",
    "project_residuals", "predict_residuals", "time_to_learn",
    "sum_of_sines", "sine_data", "circle_grid", "circle_data", "fourier_modes", "gratings",
    "frequency_amplitudes", "circle_spectrum", "fit_power_law", "PowerLawFit",
    # spectra on the sphere
    "sphere_spectrum", "SphereSpectrum", "sphere_data", "sphere_multiplicity",
    "sphere_harmonic_dimension", "gegenbauer", "limit_kernel_of_cosine", "CosineKernel",
    # kernel motion: lazy vs rich training
    "ScaledLinear", "mup_layer", "kernel_alignment", "relative_kernel_change", "OutputScaled", "train_to_loss",
    # generalization: kernel regression and learning curves
    "kernel_regression", "learning_curve", "LearningCurve", "target_power",
]
