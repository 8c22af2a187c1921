# The one device call of session 15 (bash docs/results/gpu_s15.sh, carry .whl: the project's dependencies the
# device lacks, as cp312 wheels): GPU precision and layout (gpu_s15.py), then bench.e2e with a GPU worker.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi -L; nproc
python3 docs/results/gpu_s15.py 128 2>&1 | tee $OUT/gpu_precision_s15.txt
for p in "1 2 64" "8 2 256"; do set -- $p
  python3 -m bench.e2e --images $3 --processes $1 --threads $2 --add-noise 25 --json $OUT/e2e_gpu_${1}x${2}.json \
    2>&1 | tee $OUT/e2e_gpu_${1}x${2}.txt
done
DENOCAP_PRECISION=float32 python3 -m bench.e2e --images 64 --processes 1 --threads 2 --add-noise 25 \
  --json $OUT/e2e_gpu_1x2_fp32.json 2>&1 | tee $OUT/e2e_gpu_1x2_fp32.txt
ls -la $OUT
