package main

// Plain writers: an object whose selection, at every depth, asks only for
// columns of its Go value (no resolver, method, argument or directive) is
// written straight to a buffer, instead of through gqlgen's executor.
//
// gqlgen resolves every field of every object the same way: a field context,
// a context value, the middleware chain, the value boxed twice, a field set
// and a deferred group per object (with the object's path built for it). For
// a 50-row history page that is about a hundred allocations a row, and most
// of the page's CPU. None of it does anything for a column read from a struct
// already in memory when no field interceptor is installed. So generation
// adds, for every object type, a writer that walks the collected fields once
// and writes each column with gqlgen's own marshal function for its type, and
// makes gqlgen's object marshaler try it first (writePlain, in the generated
// package's marshal.go, says when it may).

import (
	"bytes"
	"fmt"
	"go/format"
	"go/types"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/99designs/gqlgen/codegen"
	"github.com/99designs/gqlgen/codegen/templates"
	"github.com/vektah/gqlparser/v2/ast"
)

type plainWriters struct {
	objects []*plainObject
}

type plainObject struct {
	*codegen.Object
	fields []plainField
}

type plainField struct {
	*codegen.Field
	child *codegen.Object // for an object or a list of objects
	list  bool
}

func (*plainWriters) Name() string { return "plainwriters" }

// GenerateCode runs before gqlgen writes the exec file: it decides which
// fields are plain and writes their table, plain.go.
func (p *plainWriters) GenerateCode(data *codegen.Data) error {
	objects := map[string]*codegen.Object{}
	for _, o := range data.Objects {
		if !o.Root && !o.Stream && !o.IsReserved() {
			objects[o.Name] = o
		}
	}
	for _, o := range data.Objects {
		if objects[o.Name] == nil {
			continue
		}
		po := &plainObject{Object: o}
		for _, f := range o.Fields {
			if pf, ok := plainFieldOf(f, objects); ok {
				po.fields = append(po.fields, pf)
			}
		}
		if len(po.fields) > 0 {
			p.objects = append(p.objects, po)
		}
	}
	slices.SortFunc(p.objects, func(a, b *plainObject) int { return strings.Compare(a.Name, b.Name) })

	var b bytes.Buffer
	b.WriteString(plainHeader)
	b.WriteString("var plainFields = map[string]map[string]bool{\n")
	for _, o := range p.objects {
		fmt.Fprintf(&b, "\t%q: {", o.Name)
		for i, f := range o.fields {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q: true", f.Name)
		}
		b.WriteString("},\n")
	}
	b.WriteString("}\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		return fmt.Errorf("formatting plain.go: %w", err)
	}
	return os.WriteFile(filepath.Join(filepath.Dir(data.Config.Exec.Filename), "plain.go"), src, 0o644)
}

// plainFieldOf says whether f is a column a plain writer can write, and how.
func plainFieldOf(f *codegen.Field, objects map[string]*codegen.Object) (plainField, bool) {
	ref := f.TypeReference
	if f.IsResolver || !f.IsVariable() || f.IsReserved() || len(f.Args) > 0 || f.HasDirectives() ||
		f.HasHaser || f.Batch || ref == nil || ref.Definition == nil || ref.IsContext {
		return plainField{}, false
	}
	switch ref.Definition.Kind {
	case ast.Scalar, ast.Enum:
		return plainField{Field: f}, true
	case ast.Object:
		elem := ref
		list := ref.IsSlice()
		if list {
			elem = ref.Elem()
		}
		child := objects[elem.Definition.Name]
		if child == nil || elem.IsSlice() || !types.Identical(pointerTo(elem.GO), child.Reference()) {
			return plainField{}, false
		}
		return plainField{Field: f, child: child, list: list}, true
	}
	return plainField{}, false
}

func pointerTo(t types.Type) types.Type {
	if _, ok := t.(*types.Pointer); ok {
		return t
	}
	return types.NewPointer(t)
}

// rewrite appends the writers to the exec file and makes each object
// marshaler try its writer first.
func (p *plainWriters) rewrite(filename string) error {
	src, err := os.ReadFile(filename)
	if err != nil {
		return err
	}
	var writers bytes.Buffer
	for _, o := range p.objects {
		head := fmt.Sprintf("func (ec *executionContext) _%s(ctx context.Context, sel ast.SelectionSet, obj ", o.Name)
		start := bytes.Index(src, []byte(head))
		if start < 0 {
			return fmt.Errorf("%s: no marshaler of %s written as this rewrite expects; update graph/codegen", filename, o.Name)
		}
		end := bytes.Index(src[start:], []byte(") graphql.Marshaler {\n"))
		if end < 0 {
			return fmt.Errorf("%s: the marshaler of %s is not written as this rewrite expects; update graph/codegen", filename, o.Name)
		}
		objType := string(src[start+len(head) : start+end])
		bodyAt := start + end + len(") graphql.Marshaler {\n")
		hook := fmt.Sprintf("\tif m := writePlain(ctx, ec.OperationContext, sel, %s, func(ctx context.Context, w *plainWriter, fields []graphql.CollectedField) bool {\n"+
			"\t\treturn ec.plain%s(ctx, w, fields, obj)\n\t}); m != nil {\n\t\treturn m\n\t}\n", implementors(o.Object), o.Name)
		src = slices.Concat(src[:bodyAt], []byte(hook), src[bodyAt:])
		o.writeWriter(&writers, objType)
	}
	src = append(src, writers.Bytes()...)
	out, err := format.Source(src)
	if err != nil {
		return fmt.Errorf("formatting %s after adding the plain writers: %w", filename, err)
	}
	return os.WriteFile(filename, out, 0o644)
}

func implementors(o *codegen.Object) string { return templates.LcFirst(o.Name) + "Implementors" }

// writeWriter writes o's plain writer: false when a field is not plain, or
// a value is null where the schema does not allow it (gqlgen then marshals
// the object, and reports the error on the right path).
func (o *plainObject) writeWriter(b *bytes.Buffer, objType string) {
	fmt.Fprintf(b, "\nfunc (ec *executionContext) plain%s(ctx context.Context, w *plainWriter, fields []graphql.CollectedField, obj %s) bool {\n", o.Name, objType)
	b.WriteString("\tw.WriteByte('{')\n\tfor i, field := range fields {\n\t\tw.key(i, field.Alias)\n\t\tswitch field.Name {\n")
	fmt.Fprintf(b, "\t\tcase \"__typename\":\n\t\t\tw.WriteString(%q)\n", `"`+o.Name+`"`)
	for _, f := range o.fields {
		fmt.Fprintf(b, "\t\tcase %q:\n", f.Name)
		value := "obj." + f.GoFieldName
		ref := f.TypeReference
		switch {
		case f.child == nil:
			if direct := directScalar(f.Field, value); direct != "" {
				b.WriteString(direct)
				break
			}
			fmt.Fprintf(b, "\t\t\tif !w.value(ec.%s(w.quiet(ctx), field.Selections, %s), %t) {\n\t\t\t\treturn false\n\t\t\t}\n", ref.MarshalFunc(), value, ref.GQL.NonNull)
		case !f.list:
			writeObject(b, "\t\t\t", f.child, value, ref.IsNilable(), ref.GQL.NonNull,
				fmt.Sprintf("w.collect(ec.OperationContext, field.Selections, %s)", implementors(f.child)))
		default:
			if ref.GQL.NonNull {
				fmt.Fprintf(b, "\t\t\tif %s == nil {\n\t\t\t\tw.WriteString(\"[]\")\n\t\t\t\tbreak\n\t\t\t}\n", value)
			} else {
				fmt.Fprintf(b, "\t\t\tif %s == nil {\n\t\t\t\tw.WriteString(\"null\")\n\t\t\t\tbreak\n\t\t\t}\n", value)
			}
			fmt.Fprintf(b, "\t\t\tchildren := w.collect(ec.OperationContext, field.Selections, %s)\n", implementors(f.child))
			fmt.Fprintf(b, "\t\t\tw.WriteByte('[')\n\t\t\tfor j := range %s {\n\t\t\t\tif j > 0 {\n\t\t\t\t\tw.WriteByte(',')\n\t\t\t\t}\n", value)
			elem := ref.Elem()
			writeObject(b, "\t\t\t\t", f.child, value+"[j]", elem.IsNilable(), elem.GQL.NonNull, "children")
			b.WriteString("\t\t\t}\n\t\t\tw.WriteByte(']')\n")
		}
	}
	b.WriteString("\t\tdefault:\n\t\t\treturn false\n\t\t}\n\t}\n\tw.WriteByte('}')\n\treturn true\n}\n")
}

// directScalar writes a non-null column of a common scalar without a
// marshaler value (an allocation each, and a boxing for a Marshaler type):
// gqlgen's own function called in place, or for numbers and times the same
// text appended to the buffer. "" for any other column.
func directScalar(f *codegen.Field, value string) string {
	ref := f.TypeReference
	if !ref.GQL.NonNull || ref.IsNilable() || ref.IsTargetNilable() || ref.CastType != nil || ref.HasEnumValues() {
		return ""
	}
	if ref.IsMarshaler {
		return fmt.Sprintf("\t\t\t%s.MarshalGQL(w)\n", value)
	}
	if ref.Marshaler == nil || ref.Marshaler.Pkg() == nil || ref.Marshaler.Pkg().Path() != "github.com/99designs/gqlgen/graphql" {
		return ""
	}
	switch ref.Marshaler.Name() {
	case "MarshalString", "MarshalID":
		return fmt.Sprintf("\t\t\tgraphql.MarshalString(%s).MarshalGQL(w)\n", value)
	case "MarshalInt", "MarshalInt32", "MarshalInt64":
		return fmt.Sprintf("\t\t\tw.int(int64(%s))\n", value)
	case "MarshalBoolean":
		return fmt.Sprintf("\t\t\tw.bool(%s)\n", value)
	case "MarshalTime":
		return fmt.Sprintf("\t\t\tif !w.time(%s) {\n\t\t\t\treturn false\n\t\t\t}\n", value)
	}
	return ""
}

// writeObject writes the statements writing one object value: a pointer is
// checked for nil, a struct is passed by its address (as gqlgen does).
func writeObject(b *bytes.Buffer, indent string, child *codegen.Object, value string, nilable, nonNull bool, fields string) {
	if nilable {
		fmt.Fprintf(b, "%sif %s == nil {\n", indent, value)
		if nonNull {
			fmt.Fprintf(b, "%s\treturn false\n", indent)
		} else {
			fmt.Fprintf(b, "%s\tw.WriteString(\"null\")\n", indent)
		}
		fmt.Fprintf(b, "%s} else if !ec.plain%s(ctx, w, %s, %s) {\n%s\treturn false\n%s}\n", indent, child.Name, fields, value, indent, indent)
		return
	}
	fmt.Fprintf(b, "%sif !ec.plain%s(ctx, w, %s, &%s) {\n%s\treturn false\n%s}\n", indent, child.Name, fields, value, indent, indent)
}

const plainHeader = `// Code generated by graph/codegen, DO NOT EDIT.

package generated

// plainFields are, by type, the fields a plain writer writes itself:
// columns of the Go value (no resolver, method, argument or directive) of a
// scalar, an enum, an object or a list of objects. writePlain (marshal.go)
// reads them.
`
