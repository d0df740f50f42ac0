using System.Text;

using static TorchSharp.torch;

using Lora.Core.IO;

namespace Lora.Core.Training;

/// A single-file checkpoint: a JSON header and named raw tensors (dtype, shape, bytes), written
/// atomically so a run killed while writing keeps its previous checkpoint.
public static class CheckpointFile
{
    static readonly byte[] Magic = "LORACKPT"u8.ToArray();
    const int Version = 1;

    public static void Write(string path, string metaJson, IEnumerable<(string Name, Tensor Value)> tensors)
    {
        AtomicFile.Write(path, s =>
        {
            using var w = new BinaryWriter(s, Encoding.UTF8, leaveOpen: true);
            w.Write(Magic); w.Write(Version);
            var meta = Encoding.UTF8.GetBytes(metaJson);
            w.Write(meta.Length); w.Write(meta);
            var list = tensors.ToList();
            w.Write(list.Count);
            foreach (var (name, value) in list)
            {
                using var t = value.detach().cpu().contiguous();
                w.Write(name);
                w.Write((int)t.dtype);
                w.Write((int)t.dim());
                foreach (var d in t.shape) w.Write(d);
                var bytes = t.bytes;
                w.Write((long)bytes.Length);
                w.Write(bytes);
            }
        });
    }

    public static (string Meta, Dictionary<string, Tensor> Tensors) Read(string path)
    {
        try
        {
            using var r = new BinaryReader(InputFile.OpenRead(path, long.MaxValue, "training checkpoint"), Encoding.UTF8);
            if (!r.ReadBytes(Magic.Length).AsSpan().SequenceEqual(Magic))
                throw new InvalidDataException($"{path} is not a Lora training checkpoint.");
            var version = r.ReadInt32();
            if (version != Version) throw new InvalidDataException($"{path}: checkpoint version {version} is not supported (expected {Version}).");
            long remaining = r.BaseStream.Length;
            int metaLen = r.ReadInt32();
            if (metaLen < 0 || metaLen > remaining) throw new InvalidDataException($"{path}: corrupt header.");
            var meta = Encoding.UTF8.GetString(r.ReadBytes(metaLen));
            int count = r.ReadInt32();
            var tensors = new Dictionary<string, Tensor>();
            for (int i = 0; i < count; i++)
            {
                var name = r.ReadString();
                var dtype = (ScalarType)r.ReadInt32();
                int ndim = r.ReadInt32();
                if (ndim < 0 || ndim > 8) throw new InvalidDataException($"{path}: tensor {name} has {ndim} dimensions.");
                var shape = new long[ndim];
                for (int d = 0; d < ndim; d++) shape[d] = r.ReadInt64();
                long n = r.ReadInt64();
                if (n < 0 || n > remaining) throw new InvalidDataException($"{path}: tensor {name} claims {n} bytes.");
                var bytes = r.ReadBytes((int)n);
                if (bytes.Length != n) throw new EndOfStreamException();
                var t = empty(shape, dtype);
                if (t.bytes.Length != n) throw new InvalidDataException($"{path}: tensor {name} has {n} bytes for shape [{string.Join(",", shape)}] {dtype}.");
                t.bytes = bytes;
                tensors[name] = t.DetachFromDisposeScope();
            }
            return (meta, tensors);
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException($"{path}: the checkpoint is truncated; delete it to start the run over.");
        }
    }
}
