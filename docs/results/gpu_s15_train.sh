# session 15: `bash .dev/gpu2.sh` on the lent H200 (carry .dev: CBSD432 and docs/results/gpu_s14.py as .dev/gpu.py)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
STEPS=8000 python3 .dev/gpu.py train F .dev/cbsd432 96 64 1e-4 6.5 250 1 & a=$!
STEPS=6000 python3 .dev/gpu.py train G .dev/cbsd432 128 32 1e-4 6.5 250 1 & b=$!
wait $a; wait $b
tail -n 40 $OUT/train.log; ls -la $OUT
