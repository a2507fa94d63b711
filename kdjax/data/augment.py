"""Random image augmentation on the accelerator, inside compiled train steps.

Every function takes an NHWC batch of any dtype, is pure, and works under
`jax.jit` (shift sizes and the `flip` switch are static Python values). Each
example draws its own random transform from one key for the batch.
"""

import jax
import jax.numpy as jnp

from kdjax.errors import ConfigError


def translate(rng: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
  """Shifts each image by its own random whole-pixel offset, filling with 0.

  Each image moves by (dy, dx) drawn uniformly from
  {-max_shift, ..., max_shift}², independently per example; pixels shifted
  out are lost and vacated pixels become 0 (the "jitter by up to two pixels"
  of Hinton et al. 2015 is max_shift=2). Padding by p and taking a random
  crop of the original size, the standard CIFAR augmentation, is exactly this
  with max_shift=p (see `random_crop`).

  Args:
    rng: a PRNG key.
    images: [N, H, W, C] batch.
    max_shift: the largest shift in pixels along each axis, a non-negative
      Python int; 0 returns `images` unchanged.

  Returns:
    [N, H, W, C] shifted images, of the dtype of `images`.
  """
  if max_shift < 0:
    raise ConfigError(f'max_shift must be >= 0, got {max_shift}')
  if max_shift == 0:
    return images
  _, height, width, channels = images.shape
  padded = jnp.pad(
      images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  # A crop starting at `corner` shifts the content by max_shift - corner.
  corners = jax.random.randint(
      rng, (images.shape[0], 2), 0, 2 * max_shift + 1)

  def crop(image, corner):
    return jax.lax.dynamic_slice(
        image, (corner[0], corner[1], 0), (height, width, channels))

  return jax.vmap(crop)(padded, corners)


def random_crop(rng: jax.Array, images: jax.Array, padding: int) -> jax.Array:
  """Zero-pads each image by `padding` and crops a random original-size window.

  The same transform as `translate(rng, images, max_shift=padding)`.

  Args:
    rng: a PRNG key.
    images: [N, H, W, C] batch.
    padding: pixels of zeros added on every side before cropping.

  Returns:
    [N, H, W, C] cropped images, of the dtype of `images`.
  """
  return translate(rng, images, max_shift=padding)


def flip_left_right(rng: jax.Array, images: jax.Array) -> jax.Array:
  """Mirrors each image horizontally with probability 1/2, independently.

  Args:
    rng: a PRNG key.
    images: [N, H, W, C] batch.

  Returns:
    [N, H, W, C] images, of the dtype of `images`.
  """
  should_flip = jax.random.bernoulli(rng, 0.5, (images.shape[0],))
  return jnp.where(should_flip[:, None, None, None], images[:, :, ::-1, :],
                   images)


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """Scales pixel values in [0, 255] to float32 (x / 255 − mean) / std.

  Args:
    images: [..., C] pixels in [0, 255], usually uint8.
    mean: C per-channel means of the pixels scaled to [0, 1].
    std: C per-channel standard deviations of the same.

  Returns:
    [..., C] float32 normalised images.
  """
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(
    rng: jax.Array, images: jax.Array, *, max_shift: int = 0,
    flip: bool = False
) -> jax.Array:
  """Random translation (see `translate`), then a random horizontal flip.

  Args:
    rng: a PRNG key.
    images: [N, H, W, C] batch.
    max_shift: largest shift in pixels along each axis; 0 for none.
    flip: whether to mirror each image with probability 1/2.

  Returns:
    [N, H, W, C] augmented images, of the dtype of `images`.
  """
  translate_rng, flip_rng = jax.random.split(rng)
  images = translate(translate_rng, images, max_shift)
  if flip:
    images = flip_left_right(flip_rng, images)
  return images
