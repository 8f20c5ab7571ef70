/*
 * web_assets.h - the dashboard files of web/, embedded into dwfd at build
 * time by scripts/embed.sh (generated build/web_assets.c). Static data:
 * nothing to free. The table ends with an entry whose path is NULL.
 */
#ifndef DWF_WEB_ASSETS_H
#define DWF_WEB_ASSETS_H

#include <stddef.h>

typedef struct dwf_web_asset {
    const char *path;          /* "/index.html" */
    const char *content_type;
    const unsigned char *data;
    size_t size;
} dwf_web_asset;

extern const dwf_web_asset dwf_web_assets[];

#endif
