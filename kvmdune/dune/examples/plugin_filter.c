/* plugin_filter.c - an untrusted image filter, the plugin of the Dune lecture's
 * sandbox example (plugin_host.c runs it). Built alone, as plugin.h says:
 *
 *     gcc -O2 -static-pie -nostdlib -ffreestanding -fno-stack-protector \
 *         -Wl,-e,plugin_main -o plugin_filter.plugin plugin_filter.c
 *
 * It filters the PGM image in its image buffer and writes the result to stdout
 * (a write the host allows), then says it is done with exit(0).
 */
#include "plugin.h"

static void invert(unsigned char *pixels, uint64_t count)
{
	for (uint64_t i = 0; i < count; i++)
		pixels[i] = (unsigned char)(255 - pixels[i]);
}

static uint64_t clamp(int64_t value, uint64_t limit)
{
	return value < 0 ? 0 : (uint64_t)value >= limit ? limit - 1 : (uint64_t)value;
}

/* The mean of each pixel's 3x3 neighbourhood (edge pixels repeated), rounded. */
static void blur(const unsigned char *in, unsigned char *out, uint64_t width, uint64_t height)
{
	for (uint64_t y = 0; y < height; y++) {
		for (uint64_t x = 0; x < width; x++) {
			unsigned sum = 0;

			for (int dy = -1; dy <= 1; dy++)
				for (int dx = -1; dx <= 1; dx++)
					sum += in[clamp((int64_t)y + dy, height) * width
						  + clamp((int64_t)x + dx, width)];
			out[y * width + x] = (unsigned char)((sum + 4) / 9);
		}
	}
}

/* All of it, or a negative errno. */
static long write_out(const unsigned char *buffer, uint64_t length)
{
	while (length) {
		long written = plugin_syscall(PLUGIN_SYS_WRITE, PLUGIN_STDOUT, (long)buffer,
					      (long)length, 0);

		if (written <= 0)
			return written < 0 ? written : -1;
		buffer += written;
		length -= (uint64_t)written;
	}
	return 0;
}

void __attribute__((noreturn)) plugin_main(const struct plugin_args *args)
{
	unsigned char *pixels = args->image + args->pixels;
	uint64_t count = args->width * args->height;

	switch (args->task) {
	case PLUGIN_INVERT:
		invert(pixels, count);
		if (write_out(args->image, args->image_size) < 0)
			plugin_exit(2);
		break;
	case PLUGIN_BLUR:
		blur(pixels, args->scratch, args->width, args->height);
		if (write_out(args->image, args->pixels) < 0 || write_out(args->scratch, count) < 0)
			plugin_exit(2);
		break;
	default:
		plugin_exit(1);
	}
	plugin_exit(0);
}
