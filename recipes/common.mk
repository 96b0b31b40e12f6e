# What every recipe shares, included by each right after it sets OUT:
#
#   OUT ?= out/NAME
#   include $(dir $(lastword $(MAKEFILE_LIST)))common.mk
#
# The variables every recipe takes, the budget check, two macros for the tables the commands
# print, and the two targets every recipe ends with: OUT/report/index.html (`interp report` over
# OUT) and OUT/summary.md (the key numbers).  A recipe sets TITLE, NOTE (one line under the title
# of summary.md), OUTPUTS (what the report and the summary wait for) and SUMMARY (its sections,
# shell commands: $(call SECTION,...) ...), and keeps only its pipeline.

# the command: this clone's .venv/bin/interp (what `make install` makes) when it is there, else
# `interp` on PATH
CLONE  := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
INTERP ?= $(if $(wildcard $(CLONE)/.venv/bin/interp),$(CLONE)/.venv/bin/interp,interp)
DATA   ?= ../shared/data
DEVICE ?= auto
BUDGET ?= small

ifeq ($(filter tiny small paper,$(BUDGET)),)
  $(error BUDGET must be tiny, small or paper, not '$(BUDGET)')
endif
ifeq ($(INTERP),interp)
  ifeq ($(shell command -v interp),)
    $(error interp is not on PATH and $(CLONE)/.venv/bin/interp does not exist: run `make install` first, or set INTERP=path/to/interp)
  endif
endif

HAVE_CIFAR := $(wildcard $(DATA)/cifar10.npz)
# $(NEED_CIFAR): stop at once (a budget that needs real data, without it)
NEED_CIFAR = $(if $(HAVE_CIFAR),,$(error BUDGET=$(BUDGET) needs $(DATA)/cifar10.npz (set DATA=folder)))

# INTERP_PROGRESS=0 $(INTERP) CMD ... $(call TABLE,FILE): keep the command's table (stderr, which
# then holds no progress lines: INTERP_PROGRESS=0) for summary.md; show it if the command fails
TABLE = 2> $(1) || { cat $(1) >&2; exit 1; }
# $(call SECTION,TITLE,FILE): one section of summary.md holding a command's table
SECTION = printf '\n\#\# %s\n\n```\n' '$(1)'; cat $(2); printf '```\n';

.DEFAULT_GOAL := all
.PHONY: all

$(OUT) $(OUT)/tables:
	mkdir -p $@

# the recipe's OUTPUTS are known only once the whole recipe is read: $$(OUTPUTS), expanded again then
.SECONDEXPANSION:

$(OUT)/report/index.html: $$(OUTPUTS)
	$(INTERP) report $(OUT) --title '$(TITLE) (BUDGET=$(BUDGET))' --force -o $(@D)

$(OUT)/summary.md: $$(OUTPUTS)
	{ printf '# %s (BUDGET=%s)\n\n%s\n' '$(TITLE)' '$(BUDGET)' '$(NOTE)'; $(SUMMARY) } > $@.tmp && mv $@.tmp $@
