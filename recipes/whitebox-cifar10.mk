# White-box networks of the research log (../shared/seeds/000_*.txt, METHODS.md 4.2) on CIFAR-10
# plane vs car: the conjunction-disjunction net (smp-conjdisj, the log's ~90 %), the directional
# net (smp-directional, ~94 %), positively-constrained convolutions (positive-vgg) and Gumbel
# convolutions (smp-gumbel), each with a SoftMaxPool head.  For every net: its accuracy, the input
# gradients of both class logits on test images (the log's plane and car pictures), the gradients
# of its units on Gaussian noise (`interp noise-grad`: the log's tool for judging interpretability)
# and its first-layer kernels.  Every target is one `interp` call; --force: a folder that is made
# again is replaced as a whole.
#
#   make -f recipes/whitebox-cifar10.mk INTERP=.venv/bin/interp            # BUDGET=small, out/whitebox-cifar10/
#   make -f recipes/whitebox-cifar10.mk BUDGET=paper DEVICE=cuda
#
# Budgets (BUDGET=...):
#   tiny   seconds: generated 32x32 pulses, square vs gaussian (a stand-in for plane vs car), 300
#          training images, 2 epochs, 4 test images, 4 units, 2 noise samples (tests/test_recipes.py)
#   small  (default) about 5 minutes on 2 CPU cores: all 10000 training and 2000 test images of plane
#          and car from $(DATA)/cifar10.npz, 10 epochs, 16 test images, 16 units, 6 noise samples;
#          without cifar10.npz, the generated pulses at 32x32 instead (summary.md says which)
#   paper  a GPU: the arch recipes' 20 epochs (Adam 1e-3, cosine; the log gives no epoch count), the
#          log's 60 test images, every unit, 16 noise samples
#
# Writes $(OUT)/runs/ (checkpoints and training logs), compare/ (accuracy per arch), and per arch
# ARCH/grad/ (class-logit gradients on test images), ARCH/units/ (unit gradients on noise),
# ARCH/kernels/; tables/, report/index.html and summary.md.

OUT ?= out/whitebox-cifar10
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

PULSES     := --dataset pulses --dataset-arg size=32 --classes square,gaussian

ifeq ($(BUDGET),tiny)
  DATASET   := $(PULSES) --dataset-arg n_train=450 --dataset-arg n_test=60
  DATA_NOTE := generated pulses at 32x32, square vs gaussian (the tiny budget never reads real data)
  EPOCHS    := --epochs 2
  IMAGES    := 0:4
  UNITS     := 0:4
  SAMPLES   := 2
else ifeq ($(BUDGET),small)
  ifneq ($(HAVE_CIFAR),)
    DATASET   := --dataset cifar10 --classes plane,car
    DATA_NOTE := CIFAR-10 plane vs car ($(DATA)/cifar10.npz), 10000 training and 2000 test images
  else
    DATASET   := $(PULSES)
    DATA_NOTE := generated pulses at 32x32, square vs gaussian: $(DATA)/cifar10.npz was not found
  endif
  EPOCHS    := --epochs 10
  IMAGES    := 0:16
  UNITS     := 0:16
  SAMPLES   := 6
else  # paper
  $(NEED_CIFAR)
  DATASET   := --dataset cifar10 --classes plane,car
  DATA_NOTE := CIFAR-10 plane vs car ($(DATA)/cifar10.npz), 10000 training and 2000 test images
  EPOCHS    :=
  IMAGES    := 0:60
  UNITS     :=
  SAMPLES   := 16
endif

ARCHS := smp-conjdisj smp-directional positive-vgg smp-gumbel

# the units drawn on noise: the parts (conv1 channels, max-pooled) of the conjunction-disjunction
# net, the directional units, the penultimate positive units, the Gumbel units
UNIT_LAYER_smp-conjdisj    := features.conv1
UNIT_LAYER_smp-directional := features.conv2
UNIT_LAYER_positive-vgg    := features.conv_out
UNIT_LAYER_smp-gumbel      := features.conv2

all: $(OUT)/report/index.html $(OUT)/summary.md

$(OUT)/runs $(ARCHS:%=$(OUT)/%):
	mkdir -p $@

# ---- the nets (each also writes ARCH.log.jsonl)

$(OUT)/runs/%.safetensors: | $(OUT)/runs
	$(INTERP) train --arch $* $(DATASET) --data-dir $(DATA) $(EPOCHS) --device $(DEVICE) --force --out $@

# ---- test accuracy per arch

$(OUT)/compare/compare.json: $(ARCHS:%=$(OUT)/runs/%.safetensors) | $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) compare $(OUT)/runs --metric test_acc --force -o $(@D) $(call TABLE,$(OUT)/tables/compare.txt)

# ---- input gradients of both class logits on the same test images

$(OUT)/%/grad/grid.png: $(OUT)/runs/%.safetensors | $(OUT)/% $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) noise-grad $< --data-dir $(DATA) --indices $(IMAGES) --render percentile --device $(DEVICE) \
		--force -o $(@D) $(call TABLE,$(OUT)/tables/grad-$*.txt)

# ---- gradients of units on Gaussian noise, with their mean

$(OUT)/%/units/grid.png: $(OUT)/runs/%.safetensors | $(OUT)/% $(OUT)/tables
	INTERP_PROGRESS=0 $(INTERP) noise-grad $< --layer $(UNIT_LAYER_$*) $(if $(UNITS),--units $(UNITS)) --samples $(SAMPLES) --average \
		--device $(DEVICE) --force -o $(@D) $(call TABLE,$(OUT)/tables/units-$*.txt)

# ---- first-layer kernels

$(OUT)/%/kernels/kernels.png: $(OUT)/runs/%.safetensors | $(OUT)/%
	$(INTERP) kernels $< --columns 10 --device $(DEVICE) --force -o $(@D)

# ---- the gallery and the key numbers (common.mk's targets)

TITLE   := White-box nets, plane vs car
NOTE    := Data: $(DATA_NOTE).
OUTPUTS := $(OUT)/compare/compare.json $(ARCHS:%=$(OUT)/%/grad/grid.png) $(ARCHS:%=$(OUT)/%/units/grid.png) \
	$(ARCHS:%=$(OUT)/%/kernels/kernels.png)
SUMMARY  = $(call SECTION,Test accuracy: interp compare,$(OUT)/tables/compare.txt) \
	printf '\n\#\# Gradient alignment: interp noise-grad (means over units)\n\n```\n'; \
	$(foreach a,$(ARCHS),printf '%-16s ' $(a); cat $(OUT)/tables/grad-$(a).txt; \
	  printf '%-16s ' $(a); cat $(OUT)/tables/units-$(a).txt;) \
	printf '```\n';
