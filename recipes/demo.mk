# The README's quick start as a Makefile: train a small model on the embedded `digits`
# dataset, evaluate it, record its metadata and explain a few test images; an HTML report of it all
# and summary.md.  Every target is one `interp` call;
# --force: an out-of-date explanation folder is replaced as a whole.
#
#   make -f recipes/demo.mk INTERP=interp OUT=out/demo
#
# Budgets: BUDGET=small (default, what `make demo` runs: 20 epochs, ~30 s on 2 CPU cores; also
# BUDGET=paper) or BUDGET=tiny (3 epochs, for tests/test_recipes.py).

OUT ?= out/demo
include $(dir $(lastword $(MAKEFILE_LIST)))common.mk

ifeq ($(BUDGET),tiny)
  EPOCHS := 3
else
  EPOCHS := 20
endif

all: $(OUT)/info.json $(OUT)/report/index.html $(OUT)/summary.md

$(OUT)/lenet.safetensors: | $(OUT)
	$(INTERP) train --arch lenet --dataset digits --epochs $(EPOCHS) --snapshot-every 20 --val-split 0.1 \
		--device $(DEVICE) --out $@

$(OUT)/eval.json: $(OUT)/lenet.safetensors
	$(INTERP) eval $< --device $(DEVICE) --json > $@.tmp && mv $@.tmp $@
	$(INTERP) eval $< --device $(DEVICE) > $(OUT)/eval.txt && cat $(OUT)/eval.txt

$(OUT)/info.json: $(OUT)/lenet.safetensors
	$(INTERP) info $< --json > $@.tmp && mv $@.tmp $@

$(OUT)/occlude/attributions.npz: $(OUT)/lenet.safetensors
	$(INTERP) occlude $< --indices 0:6 --score gds --window 2 --stride 1 --views 8 --k 2 \
		--device $(DEVICE) --force --out $(OUT)/occlude

$(OUT)/explain/grid.png: $(OUT)/lenet.safetensors
	$(INTERP) explain $< --indices 0:6 --method grad --method intgrad --method smoothgrad --method gradcam \
		--device $(DEVICE) --force --out $(OUT)/explain

# ---- the gallery and the key numbers (common.mk's targets)

TITLE   := interp demo: LeNet on digits
NOTE    := $(EPOCHS) epochs on the embedded 8x8 digits.
OUTPUTS := $(OUT)/eval.json $(OUT)/occlude/attributions.npz $(OUT)/explain/grid.png
SUMMARY  = $(call SECTION,The model: interp eval,$(OUT)/eval.txt)
