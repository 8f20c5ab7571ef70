# dwf - deep weight factorization service. See README.md.
#
#   make            build libdwf, dwf, dwfd
#   make run        install missing packages (as root), build, run the main job
#   make check      all tests: unit suites, sanitizer build, HTTP, export, browser
#   make bench      benchmarks (see bench/README.md)

CC      ?= cc
OPT     ?= -O2 -fvect-cost-model=dynamic
CFLAGS  ?= $(OPT) -g
WARN    := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE
DEPS    := jansson libmicrohttpd sqlite3 zlib
PCFLAGS := $(shell pkg-config --cflags $(DEPS) 2>/dev/null) -I/usr/include/x86_64-linux-gnu/openblas-pthread
PCLIBS  := $(shell pkg-config --libs $(DEPS) 2>/dev/null) -lopenblas -lpthread -lm
CHECKLIBS := $(shell pkg-config --libs check 2>/dev/null)

B ?= build
ALL_CFLAGS = $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) $(PCFLAGS) -Icore -Iserver -I$(B)

CORE_SRC   := $(sort $(wildcard core/*.c))
SERVER_SRC := $(filter-out server/dwfd.c,$(sort $(wildcard server/*.c)))
WEB_FILES  := $(sort $(shell find web -type f 2>/dev/null))
TEST_SRC   := $(sort $(wildcard tests/check_*.c))

CORE_OBJ   := $(CORE_SRC:%.c=$(B)/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(B)/%.o) $(B)/web_assets.o
TESTS      := $(TEST_SRC:tests/%.c=$(B)/tests/%)

.PHONY: all run check check-unit check-san check-py check-http check-browser bench deps clean
all: $(B)/libdwf.a $(B)/dwf $(B)/dwfd

$(B)/%.o: %.c $(wildcard core/*.h server/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(B)/libdwf.a: $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/web_assets.c: scripts/embed.sh $(WEB_FILES)
	@mkdir -p $(B)
	bash scripts/embed.sh web > $@

$(B)/web_assets.o: $(B)/web_assets.c
	$(CC) $(ALL_CFLAGS) -Wno-overlength-strings -c $< -o $@

$(B)/libdwfsrv.a: $(SERVER_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/dwf: $(B)/cli/dwf.o $(B)/libdwfsrv.a $(B)/libdwf.a
	$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -o $@ $^ $(PCLIBS)

$(B)/dwfd: $(B)/server/dwfd.o $(B)/libdwfsrv.a $(B)/libdwf.a
	$(CC) $(CFLAGS) $(EXTRA_CFLAGS) -o $@ $^ $(PCLIBS)

$(B)/tests/%: tests/%.c tests/testutil.h $(B)/libdwfsrv.a $(B)/libdwf.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(B)/libdwfsrv.a $(B)/libdwf.a $(PCLIBS) $(CHECKLIBS) -lcurl

deps:
	@bash scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	bash scripts/run.sh

# Unit suites, each its own check program; DWF_BUILD tells them where the
# binaries are.
check-unit: all $(TESTS)
	@set -e; for t in $(TESTS); do echo "== $$t"; DWF_BUILD=$(B) CK_TIMEOUT_MULTIPLIER=4 $$t; done

# The same suites built with AddressSanitizer and UndefinedBehaviorSanitizer.
check-san:
	@$(MAKE) --no-print-directory B=build-san OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  DWF_SAN=1 check-unit

check-py: all
	@set -e; for t in $(sort $(wildcard tests/test_*.py)); do echo "== $$t"; DWF_BUILD=$(B) OPENBLAS_NUM_THREADS=1 /usr/bin/python3 $$t; done

check-http: all
	@set -e; for t in $(sort $(wildcard tests/http_*.sh)); do echo "== $$t"; DWF_BUILD=$(B) bash $$t; done

check-browser: all
	@if [ -f tests/browser/run.sh ]; then DWF_BUILD=$(B) bash tests/browser/run.sh; fi

check: check-unit check-san check-py check-http check-browser
	@echo "make check: all suites passed"

bench: all
	bash bench/run.sh

clean:
	rm -rf build build-san
