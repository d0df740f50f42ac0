using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

/// Sets VER_FLG_WEAK in the .gnu.version_r entry of one symbol version (e.g. GLIBCXX_3.4.32) of ELF64
/// shared objects, when the host's libstdc++ does not define that version, or always (a package's copy
/// runs on hosts other than the one that built it; a weak need is harmless where the version exists).
public class MarkVersionNeedWeak : Task
{
    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string Version { get; set; } = "";
    public bool Always { get; set; }

    const uint SHT_GNU_VERNEED = 0x6FFFFFFE;
    const ushort VER_FLG_WEAK = 0x2;

    public override bool Execute()
    {
        if (!Always && HostHasVersion())
        {
            Log.LogMessage(MessageImportance.Low, $"host libstdc++ defines {Version}: TorchSharp natives left as they are");
            return true;
        }
        foreach (var item in Files)
        {
            var path = item.ItemSpec;
            try
            {
                var data = File.ReadAllBytes(path);
                int changed = Weaken(data, Encoding.ASCII.GetBytes(Version));
                if (changed > 0)
                {
                    var tmp = path + ".weak.tmp";
                    File.WriteAllBytes(tmp, data);
                    File.Copy(tmp, path, true);
                    File.Delete(tmp);
                    Log.LogMessage(MessageImportance.High, Always
                        ? $"{path}: marked {Version} need weak, so it loads where libstdc++ lacks that version"
                        : $"{path}: host libstdc++ lacks {Version}; marked that version need weak so it loads");
                }
            }
            catch (Exception e)
            {
                Log.LogError($"{path}: could not mark {Version} weak: {e.Message}");
            }
        }
        return !Log.HasLoggedErrors;
    }

    bool HostHasVersion()
    {
        var dirs = new System.Collections.Generic.List<string>();
        var ld = Environment.GetEnvironmentVariable("LD_LIBRARY_PATH");
        if (!string.IsNullOrEmpty(ld)) dirs.AddRange(ld.Split(new[] { ':' }, StringSplitOptions.RemoveEmptyEntries));
        dirs.AddRange(new[] { "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/usr/local/lib64", "/usr/local/lib" });
        var needle = Encoding.ASCII.GetBytes(Version + "\0");
        foreach (var d in dirs)
        {
            var f = Path.Combine(d, "libstdc++.so.6");
            if (File.Exists(f) && IndexOf(File.ReadAllBytes(f), needle) >= 0) return true;
        }
        return false;
    }

    // (inline tasks compile against netstandard2.0: no spans)
    static int IndexOf(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
        {
            if (hay[i] != needle[0]) continue;
            int j = 1;
            while (j < needle.Length && hay[i + j] == needle[j]) j++;
            if (j == needle.Length) return i;
        }
        return -1;
    }

    static bool NameIs(byte[] d, int at, byte[] name)
    {
        for (int k = 0; k < name.Length; k++) if (d[at + k] != name[k]) return false;
        return d[at + name.Length] == 0;
    }

    static int Weaken(byte[] d, byte[] version)
    {
        if (d.Length < 64 || d[0] != 0x7F || d[1] != (byte)'E' || d[2] != (byte)'L' || d[3] != (byte)'F' || d[4] != 2 || d[5] != 1)
            throw new InvalidDataException("not a little-endian ELF64 file");
        ulong shoff = BitConverter.ToUInt64(d, 0x28);
        int shentsize = BitConverter.ToUInt16(d, 0x3A), shnum = BitConverter.ToUInt16(d, 0x3C);
        int changed = 0;
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)shoff + i * shentsize);
            if (BitConverter.ToUInt32(d, sh + 4) != SHT_GNU_VERNEED) continue;
            int link = (int)BitConverter.ToUInt32(d, sh + 40);
            int info = (int)BitConverter.ToUInt32(d, sh + 44);
            int pos = checked((int)BitConverter.ToUInt64(d, sh + 24));
            int strtab = checked((int)BitConverter.ToUInt64(d, checked((int)shoff + link * shentsize) + 24));
            for (int n = 0; n < info; n++)
            {
                int cnt = BitConverter.ToUInt16(d, pos + 2);
                int aux = pos + (int)BitConverter.ToUInt32(d, pos + 8);
                for (int a = 0; a < cnt; a++)
                {
                    ushort flags = BitConverter.ToUInt16(d, aux + 4);
                    int name = strtab + (int)BitConverter.ToUInt32(d, aux + 8);
                    if (NameIs(d, name, version) && (flags & VER_FLG_WEAK) == 0)
                    {
                        var bytes = BitConverter.GetBytes((ushort)(flags | VER_FLG_WEAK));
                        d[aux + 4] = bytes[0]; d[aux + 5] = bytes[1];
                        changed++;
                    }
                    aux += (int)BitConverter.ToUInt32(d, aux + 12);
                }
                pos += (int)BitConverter.ToUInt32(d, pos + 12);
            }
        }
        return changed;
    }
}
