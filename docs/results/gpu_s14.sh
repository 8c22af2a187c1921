# call 1 (bash .dev/gpu.sh 8, PYTHONPATH=$PWD), then call 2 (bash .dev/gpu2.sh): the two device calls of session 14
# usage: bash .dev/gpu.sh MINUTES  (on the lent GPU; $OUT collects logs and weights)
export PYTHONUNBUFFERED=1
M=${1:-7}
nvidia-smi -L
python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"
python3 .dev/gpu.py bench || exit 1
python3 .dev/gpu.py train A .dev/cbsd432 96 64 2e-4 $M 250 1 & a=$!
python3 .dev/gpu.py train B .dev/cbsd432 128 32 1e-4 $M 250 1 & b=$!
python3 .dev/gpu.py train C .dev/cbsd432 96 64 5e-5 $M 250 0 & c=$!
sleep 45; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; tail -n 6 $OUT/train.log
wait $a; wait $b; wait $c
tail -n 12 $OUT/train.log; ls -la $OUT

# call 2
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
INIT=.dev/A_best.pt STEPS=5000 python3 .dev/gpu.py train D .dev/cbsd432 96 64 1e-4 4 250 1 & a=$!
STEPS=4000 python3 .dev/gpu.py train E .dev/cbsd432 128 48 2e-4 4 250 1 & b=$!
wait $a; wait $b
tail -n 30 $OUT/train.log; ls -la $OUT
