"""Forms of the project builder: a project, inviting a member, changing a member's role.

Every field is validated with a message a person can act on; the API's serializers
(core.api_projects) share the validators here, so the pages and the API refuse the same things.
"""

import warnings

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from PIL import Image

from core.models import Project
from core.permissions import MEMBERSHIP_ROLE_CHOICES

MAX_COVER_BYTES = 5 * 1024 * 1024
# Far below Pillow's own decompression-bomb limit: a cover is shown at a few hundred pixels.
MAX_COVER_PIXELS = 25_000_000
COVER_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}
SHORT_DESCRIPTION_MAX = 300


def validate_cover(upload) -> None:
    """A cover must be a PNG, JPEG, WebP or GIF image of at most 5 MB and 25 megapixels. The header is
    read before any pixel: a small file that decompresses to billions of pixels (a decompression bomb)
    is refused by its stated size, and Pillow's own bomb check turned into an error backs that up."""
    size = getattr(upload, "size", None)
    if size is not None and size > MAX_COVER_BYTES:
        raise ValidationError(
            f"The cover image is {size / 1e6:.1f} MB; at most {MAX_COVER_BYTES // (1024 * 1024)} MB, please.",
            code="too_big",
        )
    upload.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(upload) as image:
                kind, (width, height) = image.format, image.size
                if width * height > MAX_COVER_PIXELS:
                    raise ValidationError(
                        f"The cover image is {width} × {height} pixels: too large to show (at most "
                        f"{MAX_COVER_PIXELS // 1_000_000} megapixels). A few hundred pixels across is plenty.",
                        code="too_many_pixels",
                    )
                image.verify()
    except ValidationError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationError(
            "The cover image says it is far too many pixels (a decompression bomb); it was not opened.",
            code="bomb",
        ) from None
    except Exception:
        raise ValidationError(
            "The cover is not an image we can read: upload a PNG, JPEG, WebP or GIF file.", code="not_image"
        ) from None
    finally:
        upload.seek(0)
    if kind not in COVER_FORMATS:
        raise ValidationError(
            f"Covers can be PNG, JPEG, WebP or GIF images, not {kind or 'this format'}.", code="format"
        )


def validate_short_description(value: str) -> None:
    if len(value or "") > SHORT_DESCRIPTION_MAX:
        raise ValidationError(
            f"The short description has {len(value)} characters; at most {SHORT_DESCRIPTION_MAX}: "
            "longer text goes in the long description.",
            code="too_long",
        )


class ProjectForm(forms.ModelForm):
    """Creating and editing a project. The lifecycle (`status`) is here too; deleting is its own page."""

    cover_image = forms.FileField(
        required=False,
        validators=[validate_cover],
        help_text="PNG, JPEG, WebP or GIF; at most 5 MB.",
        widget=forms.ClearableFileInput(attrs={"accept": "image/png,image/jpeg,image/webp,image/gif"}),
    )

    class Meta:
        model = Project
        fields = [
            "name", "slug", "description", "long_description", "cover_image", "is_public", "status", "licence",
            "contact",
        ]  # fmt: skip
        labels = {
            "description": "Short description",
            "long_description": "Long description (Markdown)",
            "is_public": "Public: anyone may volunteer (private: members only)",
            "status": "State",
        }
        help_texts = {"slug": "The project's address: /p/SLUG/. Letters, digits, hyphens and underscores."}
        error_messages = {
            "slug": {"unique": "Another project already uses this slug: choose another address."},
        }
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2, "maxlength": SHORT_DESCRIPTION_MAX}),
            "long_description": forms.Textarea(attrs={"rows": 10}),
            "name": forms.TextInput(attrs={"class": "wide"}),
            "contact": forms.TextInput(attrs={"class": "wide"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["description"].validators.append(validate_short_description)
        if self.instance.pk is None:
            # A new project starts as a draft: its members try it before volunteers see it.
            self.initial["status"] = Project.DRAFT

    def clean_slug(self):
        slug = self.cleaned_data["slug"].lower()
        others = Project.objects.filter(slug__iexact=slug).exclude(pk=self.instance.pk)
        if others.exists():
            raise ValidationError("Another project already uses this slug: choose another address.")
        return slug

    def save(self, commit=True):
        project = super().save(commit=False)
        if project.pk is None or "status" in self.changed_data:
            # The time of the change: votes served before a pause are still taken (vote_refusal).
            project.status_changed_at = timezone.now()
        if commit:
            project.save()
        return project


class InviteForm(forms.Form):
    who = forms.CharField(
        label="User name or e-mail address",
        max_length=254,
        widget=forms.TextInput(attrs={"class": "wide", "autocomplete": "off"}),
        help_text="Someone with an account joins at once; an address without one gets an invitation link.",
    )
    role = forms.ChoiceField(choices=MEMBERSHIP_ROLE_CHOICES, initial="scientist")


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=MEMBERSHIP_ROLE_CHOICES)
