# Sourced by tools/debug_build_tests.sh and tools/asan_kernels.sh (not run on its own).
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
