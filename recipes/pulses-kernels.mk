# Kernel-visualisation study (../shared/seeds/003_*.txt, after Lee et al. 2009 and Krizhevsky et al.
# 2012): a CNN trained on generated oscilloscope waveforms (square, gaussian, sine; 1x100x100)
# with its first-layer kernels stored during training, then with `interp kernels` the kernel montage,
# their evolution (GIF, and MP4 when an encoder is installed; a PNG strip), the feature map of one
# kernel on one test image ("do a convolution") and the loss profile with the stuck-run verdict, for
# several seeds (the study saw runs "drop off into some stuck state"); the second layer's kernels;
# all seeds' training curves overlaid.  Every target is one `interp` call; --force: a folder that is
# made again is replaced as a whole.  The data are embedded (generated), so no budget needs files.
#
#   make -f recipes/pulses-kernels.mk INTERP=.venv/bin/interp              # BUDGET=small, out/pulses-kernels/
#   make -f recipes/pulses-kernels.mk BUDGET=paper DEVICE=cuda
#
# Budgets (BUDGET=...):
#   tiny   seconds: pulse-cnn, 300 training and 60 test images, 2 epochs, 2 seeds (tests/test_recipes.py)
#   small  (default) about 3 minutes on 2 CPU cores: pulse-cnn (8 9x9 kernels, 16 5x5, fc 64; Adam 2e-3,
#          batch 32), 3000 training and 600 test images, 5 epochs, 3 seeds, kernels every 10 steps
#   paper  a GPU: pulse-cnn-paper, the study's network (5 25x25 kernels, a 25x25 conv, fc 4096-1024,
#          tanh; SGD 0.1 without momentum, batch 1000, L1 loss), 10000 training images and the
#          study's 50 test images, 100 epochs (the study gives no count), 4 seeds, kernels every 5 steps
#
# Writes $(OUT)/runs/ (checkpoints, kernel snapshots, training logs), kernels-sN/ (montage, GIF,
# strip, feature map, loss profile of seed N), conv2/ (second-layer kernels of seed 0),
# curves.png (all seeds), compare/ (accuracy over seeds), tables/, report/index.html and summary.md.

OUT ?= out/pulses-kernels
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

ifeq ($(BUDGET),tiny)
  ARCH     := pulse-cnn
  DATASET  := --dataset-arg n_train=300 --dataset-arg n_test=60
  TRAIN    := --epochs 2 --snapshot-every 5
  SEEDS    := 0 1
else ifeq ($(BUDGET),small)
  ARCH     := pulse-cnn
  DATASET  :=
  TRAIN    := --epochs 5 --snapshot-every 10
  SEEDS    := 0 1 2
else  # paper
  ARCH     := pulse-cnn-paper
  DATASET  := --dataset-arg n_train=10000 --dataset-arg n_test=50
  TRAIN    := --epochs 100 --snapshot-every 5
  SEEDS    := 0 1 2 3
endif

RUNS := $(SEEDS:%=$(OUT)/runs/$(ARCH)-s%.safetensors)

all: $(OUT)/report/index.html $(OUT)/summary.md

$(OUT)/runs:
	mkdir -p $@

# ---- one run per seed (each also writes NAME.kernels.npz, the snapshots, and NAME.log.jsonl)

$(OUT)/runs/$(ARCH)-s%.safetensors: | $(OUT)/runs
	$(INTERP) train --arch $(ARCH) --dataset pulses $(DATASET) $(TRAIN) --seed $* --device $(DEVICE) --force --out $@

# ---- per seed: the montage, its evolution, kernel 0 on test image 0, the loss profile

$(OUT)/kernels-s%/kernels.png: $(OUT)/runs/$(ARCH)-s%.safetensors
	$(INTERP) kernels $< --snapshots $(<:.safetensors=.kernels.npz) --loss-log $(<:.safetensors=.log.jsonl) \
		--index 0 --kernel 0 --device $(DEVICE) --force -o $(@D)

# ---- the second layer: one row per kernel, one tile per input channel

$(OUT)/conv2/kernels.png: $(OUT)/runs/$(ARCH)-s0.safetensors
	$(INTERP) kernels $< --layer conv2 --kernels 0:8 --device $(DEVICE) --force -o $(@D)

# ---- the seeds' loss profiles overlaid (a stuck run is marked), and their accuracy

$(OUT)/curves.png: $(RUNS) | $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) plot-log $(RUNS:.safetensors=.log.jsonl) --title 'pulses: $(ARCH), seeds $(SEEDS)' --force -o $@ \
		$(call TABLE,$(OUT)/tables/curves.txt)

$(OUT)/compare/compare.json: $(RUNS) | $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) compare $(RUNS) --metric test_acc,loss --force -o $(@D) $(call TABLE,$(OUT)/tables/compare.txt)

$(OUT)/tables/eval-s0.txt: $(OUT)/runs/$(ARCH)-s0.safetensors | $(OUT)/tables
	$(INTERP) eval $< --device $(DEVICE) > $@.tmp && mv $@.tmp $@

# ---- the gallery and the key numbers (common.mk's targets)

TITLE   := Kernels of a waveform CNN
NOTE    := Data: generated pulses (embedded). Arch: $(ARCH). Seeds: $(SEEDS).
OUTPUTS := $(SEEDS:%=$(OUT)/kernels-s%/kernels.png) $(OUT)/conv2/kernels.png $(OUT)/curves.png \
	$(OUT)/compare/compare.json $(OUT)/tables/eval-s0.txt
SUMMARY  = $(call SECTION,Training runs and stuck-run verdicts: interp plot-log,$(OUT)/tables/curves.txt) \
	$(call SECTION,Accuracy and loss over seeds: interp compare,$(OUT)/tables/compare.txt) \
	$(call SECTION,Seed 0 on the test set: interp eval,$(OUT)/tables/eval-s0.txt)
