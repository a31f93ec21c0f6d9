"""Pure ``nn.Module`` networks: tensors in, tensors out, no file or terminal I/O."""
