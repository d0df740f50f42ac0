using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// Walking a TorchSharp module tree by dotted paths and replacing a child in place, so that
/// forward(), parameters() and state_dict() all see the new child (TorchSharp keeps children in a
/// registry, in Sequential's own lists, or in ModuleList's list, and custom modules call children
/// through C# fields: each is updated).
public static class ModuleTree
{
    const BindingFlags Instance = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;

    /// Every module below the root (not the root itself) with its dotted path, parents first.
    public static IEnumerable<(string Path, nn.Module Module)> Descendants(nn.Module root)
    {
        foreach (var (name, child) in root.named_children())
        {
            yield return (name, child);
            if (child is TunerLayer or ModulesToSaveWrapper) continue; // their inside is not model structure
            foreach (var (p, m) in Descendants(child)) yield return (name + "." + p, m);
        }
    }

    public static nn.Module Get(nn.Module root, string path)
    {
        var m = root;
        foreach (var part in path.Split('.'))
            m = m.named_children().FirstOrDefault(c => c.name == part).module
                ?? throw new ArgumentException($"the model has no module '{path}' (no child '{part}')");
        return m;
    }

    /// Replaces the module at <paramref name="path"/> by <paramref name="replacement"/>.
    public static void Replace(nn.Module root, string path, nn.Module<Tensor, Tensor> replacement)
    {
        var dot = path.LastIndexOf('.');
        var parent = dot < 0 ? root : Get(root, path[..dot]);
        ReplaceChild(parent, dot < 0 ? path : path[(dot + 1)..], replacement, path, dryRun: false);
    }

    /// Why the module at <paramref name="path"/> could not be replaced by a module of type
    /// <paramref name="replacementType"/>, or null when it can (checked before anything changes).
    public static string? CannotReplace(nn.Module root, string path, Type replacementType)
    {
        var dot = path.LastIndexOf('.');
        try
        {
            var parent = dot < 0 ? root : Get(root, path[..dot]);
            ReplaceChild(parent, dot < 0 ? path : path[(dot + 1)..], null, path, dryRun: true, replacementType);
            return null;
        }
        catch (ArgumentException e) { return e.Message; }
    }

    static void ReplaceChild(nn.Module parent, string name, nn.Module<Tensor, Tensor>? replacement, string path, bool dryRun, Type? replacementType = null)
    {
        var rtype = replacementType ?? replacement!.GetType();
        var old = parent.named_children().FirstOrDefault(c => c.name == name).module
            ?? throw new ArgumentException($"the model has no module '{path}'");

        if (parent is Sequential seq)
        {
            var names = (List<string>)Field(typeof(Sequential), "_names").GetValue(seq)!;
            var modules = (List<nn.IModule<Tensor, Tensor>>)Field(typeof(Sequential), "_modules").GetValue(seq)!;
            if (!dryRun) modules[names.IndexOf(name)] = replacement!;
        }
        else if (IsGeneric(parent.GetType(), typeof(ModuleList<>)))
        {
            var list = (System.Collections.IList)Field(parent.GetType(), "_list").GetValue(parent)!;
            CheckAssignable(list.GetType().GetGenericArguments()[0], rtype, path);
            if (!dryRun) list[int.Parse(name)] = replacement;
        }
        else if (parent is IReplaceableChildren table)
            table.ReplaceChild(name, replacement, dryRun);
        else if (IsGeneric(parent.GetType(), typeof(ModuleDict<>)))
            throw new ArgumentException($"'{path}' sits in a ModuleDict, whose entries cannot be replaced in place; use a custom module or ModuleList");
        else
        {
            // Custom module: the C# field (or property) named like the child, or marked [ComponentName(Name = ...)].
            var found = false;
            for (var t = parent.GetType(); t != null && t != typeof(nn.Module); t = t.BaseType)
            {
                foreach (var f in t.GetFields(Instance | BindingFlags.DeclaredOnly))
                {
                    if (!ReferenceEquals(f.GetValue(parent), old)) continue;
                    CheckAssignable(f.FieldType, rtype, path, $"field {t.Name}.{f.Name}");
                    if (!dryRun) f.SetValue(parent, replacement);
                    found = true;
                }
            }
            if (!found)
                throw new ArgumentException($"cannot replace '{path}': its parent {parent.GetType().Name} holds it in no field (keep children in fields of type Module<Tensor, Tensor>, a Sequential or a ModuleList)");
        }

        if (dryRun) return;

        // The registry, in place so that the key order of state_dict() stays the same.
        var registry = Field(typeof(nn.Module), "_internal_submodules").GetValue(parent)!;
        var list2 = (System.Collections.IList)Field(registry.GetType(), "_list").GetValue(registry)!;
        var dict = (System.Collections.IDictionary)Field(registry.GetType(), "_dict").GetValue(registry)!;
        if (dict.Contains(name))
        {
            for (var i = 0; i < list2.Count; i++)
            {
                var item = list2[i]!;
                if ((string)item.GetType().GetField("Item1")!.GetValue(item)! == name)
                    list2[i] = Activator.CreateInstance(item.GetType(), name, (nn.Module)replacement!);
            }
            dict[name] = replacement!;
        }
    }

    static void CheckAssignable(Type slot, Type replacement, string path, string? where = null)
    {
        if (!slot.IsAssignableFrom(replacement))
            throw new ArgumentException($"cannot replace '{path}' by a {replacement.Name}: {where ?? "its container"} is typed {slot.Name}; declare it as Module<Tensor, Tensor> so that tuning layers can take its place");
    }

    static bool IsGeneric(Type? t, Type generic)
    {
        for (; t != null; t = t.BaseType)
            if (t.IsGenericType && t.GetGenericTypeDefinition() == generic) return true;
        return false;
    }

    static FieldInfo Field(Type t, string name)
    {
        for (var x = t; x != null; x = x.BaseType)
            if (x.GetField(name, Instance | BindingFlags.DeclaredOnly) is { } f) return f;
        throw new InvalidOperationException($"TorchSharp internals changed: {t.Name} has no field {name}");
    }
}
