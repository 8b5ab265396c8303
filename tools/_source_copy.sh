# Sourced by tools/debug_build_tests.sh, tools/asan_kernels.sh and .ci/run (not run on its
# own).
#
# copy_source_tree REPO DEST: copy the fastcnn source tree (working tree, uncommitted edits
# included) to DEST without build artefacts, so a special build there can never touch or
# reuse the developer's in-place build: no *.so, no generated csrc/*.c (cythonize must
# regenerate them with the requested directives), no build/, .venv/ or caches.

copy_source_tree() {
    local repo=$1 dest=$2
    mkdir -p "$dest"
    tar -C "$repo" -cf - \
        --exclude=.git --exclude=.venv --exclude=build --exclude=dist \
        --exclude='*.egg-info' --exclude='*.so' --exclude='csrc/*.c' --exclude='csrc/*.cpp' \
        --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
        --exclude=.ruff_cache --exclude=runs \
        . | tar -C "$dest" -xf -
}

# The kernel tests, and the property and thread stress tests that drive the kernels through
# random shapes, whole models and concurrent threads: what tools/asan_kernels.sh runs under
# AddressSanitizer and .ci/run on the portable copy of the C kernels. Relative to the
# repository root.
KERNEL_TESTS=(
    tests/test_kernels_vs_reference.py tests/test_kernel_gradients.py tests/test_threads.py
    tests/test_functional_errors.py tests/test_property_kernels.py tests/test_property_nn.py
    tests/test_stress_threads.py tests/test_fused.py tests/test_direct_conv.py
    tests/test_filter_conv.py tests/test_config.py tests/test_isa.py tests/test_conv_groups.py
    tests/test_batchnorm_kernel.py tests/test_augment_kernel.py
)
