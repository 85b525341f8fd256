#!/bin/sh
# Put the model the image serves into the BentoML store ($BENTOML_HOME), at image build time.
#
#   bake-model EXPORT_DIR
#
# Every exported model in EXPORT_DIR (*.bentomodel, made by `bentoml models export mnist_cnn:latest deploy/models/`)
# is imported. With none there, the seed's CNN is trained here: `python -m training $TRAIN_ARGS`, which
# downloads MNIST. Either way it ends by checking that the model the service asks for is in the store.
set -eu

export_dir="${1:?usage: bake-model EXPORT_DIR}"
imported=0
for archive in "$export_dir"/*.bentomodel; do
    [ -f "$archive" ] || continue  # the pattern itself, when nothing matched
    echo "bake-model: importing $archive"
    bentoml models import "$archive"
    imported=$((imported + 1))
done

if [ "$imported" -eq 0 ]; then
    echo "bake-model: no exported model in $export_dir; training one (python -m training ${TRAIN_ARGS:-})"
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of arguments
    python -m training ${TRAIN_ARGS:-} --reports "${TMPDIR:-/tmp}/digitserve-reports"
fi

python -m training.registry --check --tag "${DIGITSERVE_MODEL_TAG:-mnist_cnn:latest}"
