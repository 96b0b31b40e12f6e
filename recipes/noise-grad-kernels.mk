# The pictures of docs/noise-grad.md and docs/kernels.md, made from scratch: small models trained
# here (digits and pulses are embedded; CIFAR-10 plane vs car needs $(DATA)/cifar10.npz), then
# `interp noise-grad` and `interp kernels` on them.  Every target is one `interp` call; nothing is
# committed (out/ is ignored).  About 5 minutes on 2 CPU cores, most of it the CIFAR model.
#
#   make -f recipes/noise-grad-kernels.mk INTERP=.venv/bin/interp OUT=out/docs
#   make -f recipes/noise-grad-kernels.mk digits pulses      # without CIFAR-10
#
# BUDGET=small (default; also paper) or tiny (seconds, for tests/test_recipes.py: 3 and 1 epochs on
# fewer images, and the `cifar` targets on generated 32x32 pulses, square vs gaussian, instead).

OUT ?= out/docs
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

ifeq ($(BUDGET),tiny)
  LENET_TRAIN := --epochs 3
  PULSE_TRAIN := --limit-train 150 --limit-test 30 --epochs 1
  SMP_TRAIN   := --dataset pulses --dataset-arg size=32 --classes square,gaussian --dataset-arg n_train=300 \
                 --dataset-arg n_test=60 --epochs 1 --snapshot-every 1
else
  LENET_TRAIN := --epochs 20
  PULSE_TRAIN := --limit-train 600 --limit-test 150 --epochs 4
  SMP_TRAIN   := --dataset cifar10 --data-dir $(DATA) --classes plane,car --limit-train 4000 --limit-test 1000 \
                 --epochs 8 --snapshot-every 25
endif

all: digits pulses cifar
digits: $(OUT)/ng-lenet/grid.png $(OUT)/ng-lenet-conv2/grid.png $(OUT)/k-lenet/kernels.png
pulses: $(OUT)/k-pulse/feature_map.png
cifar: $(OUT)/ng-smp/grid.png $(OUT)/ng-smp-units/grid.png $(OUT)/k-smp/kernels.png

# ---- models (each also writes NAME.log.jsonl and, with --snapshot-every, NAME.kernels.npz)

$(OUT)/lenet.safetensors: | $(OUT)
	$(INTERP) train --arch lenet --dataset digits $(LENET_TRAIN) --snapshot-every 10 --val-split 0.1 \
		--device $(DEVICE) --force --out $@

$(OUT)/pulse.safetensors: | $(OUT)
	$(INTERP) train --arch pulse-cnn --dataset pulses $(PULSE_TRAIN) \
		--snapshot-every 5 --device $(DEVICE) --force --out $@

$(OUT)/smp.safetensors: | $(OUT)
	$(INTERP) train --arch smp-directional $(SMP_TRAIN) --device $(DEVICE) --force --out $@

# ---- noise-grad: class logits and layer units, on noise next to test images

$(OUT)/ng-lenet/grid.png: $(OUT)/lenet.safetensors
	$(INTERP) noise-grad $< --samples 4 --indices 0:4 --average --device $(DEVICE) --force -o $(@D)

$(OUT)/ng-lenet-conv2/grid.png: $(OUT)/lenet.safetensors
	$(INTERP) noise-grad $< --layer conv2 --units 0:8 --samples 6 --average --device $(DEVICE) --force -o $(@D)

$(OUT)/ng-smp/grid.png: $(OUT)/smp.safetensors
	$(INTERP) noise-grad $< --samples 4 --indices 0:4 --render percentile --device $(DEVICE) --force -o $(@D)

$(OUT)/ng-smp-units/grid.png: $(OUT)/smp.safetensors
	$(INTERP) noise-grad $< --layer features.conv2 --units 0:8 --samples 6 --average --device $(DEVICE) \
		--force -o $(@D)

# ---- kernels: montage, snapshots (GIF, strip), feature map, loss profile

$(OUT)/k-lenet/kernels.png: $(OUT)/lenet.safetensors
	$(INTERP) kernels $< --snapshots $(<:.safetensors=.kernels.npz) --loss-log $(<:.safetensors=.log.jsonl) \
		--index 0 --kernel 2 --device $(DEVICE) --force -o $(@D)

$(OUT)/k-pulse/feature_map.png: $(OUT)/pulse.safetensors
	$(INTERP) kernels $< --index 0 --kernel 0 --snapshots $(<:.safetensors=.kernels.npz) \
		--loss-log $(<:.safetensors=.log.jsonl) --device $(DEVICE) --force -o $(@D)

$(OUT)/k-smp/kernels.png: $(OUT)/smp.safetensors
	$(INTERP) kernels $< --kernels 0:60 --columns 10 --snapshots $(<:.safetensors=.kernels.npz) --strip 4 \
		--loss-log $(<:.safetensors=.log.jsonl) --device $(DEVICE) --force -o $(@D)

.PHONY: all digits pulses cifar
