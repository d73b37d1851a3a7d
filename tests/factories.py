from __future__ import annotations

from typing import Any

import factory

from apps.accounts.models import Membership, MembershipTier, Organization, Role, User
from apps.billing.ledger import balance_initialize


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", "pass-1234-word")

    @factory.post_generation
    def verified(obj: User, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create and extracted is not False:
            from allauth.account.models import EmailAddress

            EmailAddress.objects.create(user=obj, email=obj.email, verified=True, primary=True)
        if create:
            obj.save()


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Org {n}")
    tier = factory.LazyFunction(lambda: MembershipTier.objects.get(code="FREE"))

    @factory.post_generation
    def balance(obj: Organization, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create:
            balance_initialize(organization=obj)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Role.MEMBER
